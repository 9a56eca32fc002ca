#!/bin/sh
# Run the test suite against Debian 12's own packages of the dependencies (what the .deb
# depends on: click 8.1.3, jinja2 3.1.2, psutil 5.9.4, bottle 0.12.23, dateutil 2.8.2;
# psycopg 3.1.7 for the PostgreSQL store, whose tests need postgresql-15's initdb too;
# pytest 7.2.1, hypothesis 6.67.1, pytest-timeout 2.1.0) with the vendored croniter 7.0.0.
#
#   packaging/test-debian-deps.sh [--install] [--venv DIR] [-- PYTEST-ARGS...]
#
# Makes a virtualenv on Debian's /usr/bin/python3 with --system-site-packages and no pip
# (nothing comes from PyPI), puts the vendored croniter on its path with a .pth file,
# and runs pytest on a copy of the repository laid out as the package installs it
# (admin/ and templates/ inside supervisor/). By default the tests marked deb (they build and
# install the package themselves) and browser (Playwright is not in Debian) are left out;
# PYTEST-ARGS replace that selection and are passed to pytest as they are.
#
# --install   apt-get install the Debian packages first (root)
# --venv DIR  where to make the virtualenv (default: in packaging/out/, removed after)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
croniter="croniter-7.0.0"
packages="python3-click python3-jinja2 python3-psutil python3-bottle python3-dateutil
python3-prometheus-client python3-psycopg postgresql-15
python3-pytest python3-hypothesis python3-pytest-timeout"
install=no
venv=

while [ $# -gt 0 ]; do
    case $1 in
        --install) install=yes; shift ;;
        --venv) venv=$2; shift 2 ;;
        --venv=*) venv=${1#*=}; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "test-debian-deps.sh: unknown argument: $1 (pytest arguments go after --)" >&2; exit 2 ;;
    esac
done

say() { echo "test-debian-deps.sh: $*" >&2; }

if [ "$install" = yes ]; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # one word per package
    if ! apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends $packages >&2; then
        apt-get update -o DPkg::Lock::Timeout=600 >&2
        # shellcheck disable=SC2086
        apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends $packages >&2
    fi
fi

# Not under /tmp or /var/tmp: the systemd tests boot systemd with private ones, and their
# units run this virtualenv's python from the staged copy (packaging/out/ is ignored by git).
mkdir -p "$here/out"
scratch=$(mktemp -d "$here/out/debian-deps.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
[ -n "$venv" ] || venv="$scratch/venv"

# Debian's interpreter and nothing else: no pyenv/virtualenv python3 from PATH, no
# PYTHONPATH, no user site-packages.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PYTHONNOUSERSITE=1
/usr/bin/python3 -m venv --system-site-packages --without-pip --clear "$venv"
python="$venv/bin/python"

# The vendored croniter, exactly as the package installs it (its modules, not its tests).
(cd "$here/vendor" && sha256sum --check --strict --quiet SHA256SUMS)
mkdir -p "$scratch/vendor"
tar -xzf "$here/vendor/$croniter.tar.gz" -C "$scratch/vendor" --strip-components=2 \
    "$croniter/src/croniter/__init__.py" "$croniter/src/croniter/croniter.py"
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$scratch/vendor" > "$site/sched-supervisor-vendor.pth"

say "versions in use:"
"$python" - >&2 <<'EOF'
import importlib.metadata as md
import croniter, sys
print(f"  python {sys.version.split()[0]} ({sys.executable})")
for name in ("click", "jinja2", "psutil", "bottle", "python-dateutil", "psycopg", "pytest", "hypothesis", "pytest-timeout"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
print(f"  croniter (vendored) from {croniter.__file__}")
EOF

# The repository laid out as it installs: admin/ and templates/ also as supervisor/admin
# and supervisor/templates (pyproject.toml maps them so; a development checkout gets that
# from its editable install, which this virtualenv does not have).
stage="$scratch/repo"
mkdir "$stage"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and new files that exist (not the ignored ones: .venv, caches, packaging/out).
    # shellcheck disable=SC2016 # $f is for the inner shell
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh \
        | tar --create --exclude=__pycache__ --null --files-from=-) \
        | tar --extract --directory "$stage"
else
    (cd "$repo" && tar --create --exclude=.venv --exclude=.git --exclude=__pycache__ \
        --exclude=packaging/out --exclude='*.egg-info' .) | tar --extract --directory "$stage"
fi
for package_dir in admin templates; do
    if [ -d "$stage/$package_dir" ]; then
        rm -rf "${stage:?}/supervisor/$package_dir"
        cp -a "$stage/$package_dir" "$stage/supervisor/$package_dir"
    fi
done

cd "$stage"
if [ $# -eq 0 ]; then
    set -- -m "not deb and not browser"
fi
# Two warnings of Debian's bottle 0.12.23 that pyproject.toml's filterwarnings=error would
# turn into test errors, though at run time Python ignores both (bottle 0.13 on PyPI has
# neither): it imports the cgi module (DeprecationWarning: removed in Python 3.13), and
# its import hook for bottle.ext lacks find_spec (ImportWarning whenever an import falls
# through every finder, e.g. zoneinfo looking for the tzdata package for an unknown zone).
say "running: pytest $*"
status=0
"$python" -m pytest -p no:cacheprovider \
    -W "ignore:'cgi' is deprecated and slated for removal:DeprecationWarning" \
    -W "ignore:_ImportRedirect.find_spec() not found; falling back to find_module():ImportWarning" \
    "$@" || status=$?
exit "$status"
