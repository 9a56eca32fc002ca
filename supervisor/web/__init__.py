"""The Admin Center: a Bottle app over the use cases, served threaded."""
