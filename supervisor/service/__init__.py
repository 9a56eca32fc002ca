"""Manager mode's composition root and edges: the state directory, the control socket, and the
assembly of store, launcher, manager and Admin Center."""
