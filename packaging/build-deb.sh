#!/bin/sh
# Build sched-supervisor_<version>_all.deb with Debian's tools (debhelper, dh-python,
# pybuild), then check it with lintian.
#
#   packaging/build-deb.sh [--output-dir DIR] [--install-build-deps] [--no-lintian]
#
# The repository's shipped files (pyproject.toml, README.md, supervisor/, admin/,
# templates/, examples/, packaging/) are copied into a scratch tree with packaging/debian
# as debian/, and built there with `dpkg-buildpackage -b`; the working tree is never
# written to, except the output directory (default: packaging/out/). Prints the path of
# the .deb on its last line.
#
# --install-build-deps  install the Build-Depends (and lintian) with apt-get first (root)
# --no-lintian          skip the lintian check
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
output_dir="$here/out"
install_deps=no
run_lintian=yes

while [ $# -gt 0 ]; do
    case $1 in
        --output-dir) output_dir=$2; shift 2 ;;
        --output-dir=*) output_dir=${1#*=}; shift ;;
        --install-build-deps) install_deps=yes; shift ;;
        --no-lintian) run_lintian=no; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

say() { echo "build-deb.sh: $*" >&2; }
die() { say "$*"; exit 1; }

if [ "$install_deps" = yes ]; then
    [ "$(id -u)" = 0 ] || die "--install-build-deps needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt_options="-y -o DPkg::Lock::Timeout=600"
    # The Build-Depends of packaging/debian/control; apt's lists may be missing on a
    # fresh machine, so update them once if the first try fails.
    # shellcheck disable=SC2086 # $apt_options is several words
    if ! { apt-get build-dep $apt_options "$here" \
        && apt-get install $apt_options --no-install-recommends lintian; } >&2; then
        apt-get update -o DPkg::Lock::Timeout=600 >&2
        # shellcheck disable=SC2086
        { apt-get build-dep $apt_options "$here" \
            && apt-get install $apt_options --no-install-recommends lintian; } >&2
    fi
fi

for tool in dpkg-buildpackage dpkg-parsechangelog dh; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool is missing: apt-get install debhelper dh-python pybuild-plugin-pyproject (or use --install-build-deps)"
done

# One version everywhere: pyproject.toml, supervisor/__init__.py, debian/changelog.
project_version=$(/usr/bin/python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])' "$repo/pyproject.toml")
module_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/supervisor/__init__.py")
deb_version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
[ "$project_version" = "$module_version" ] \
    || die "pyproject.toml says $project_version but supervisor/__init__.py says $module_version"
case $deb_version in
    "$project_version"|"$project_version"+*|"$project_version"-*) ;;
    *) die "packaging/debian/changelog is at $deb_version, pyproject.toml at $project_version: add a changelog entry (dch --changelog packaging/debian/changelog -v $project_version)" ;;
esac

scratch=$(mktemp -d "${TMPDIR:-/tmp}/sched-supervisor-deb.XXXXXX")
trap '[ -n "${KEEP_SCRATCH:-}" ] || rm -rf "$scratch"' EXIT INT TERM
tree="$scratch/sched-supervisor-$deb_version"
mkdir "$tree"

say "copying the sources into $tree"
(
    cd "$repo"
    tar --create --exclude=__pycache__ --exclude='*.pyc' --exclude=packaging/out \
        pyproject.toml README.md supervisor admin templates examples packaging
) | tar --extract --directory "$tree"
cp -a "$here/debian" "$tree/debian"

say "building"
(
    cd "$tree"
    # Debian's own Python and tools only: not a virtualenv's or pyenv's python3 on PATH.
    unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
    PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage --build=binary --no-sign --jobs=auto >&2
)

deb_name="sched-supervisor_${deb_version}_all.deb"
[ -f "$scratch/$deb_name" ] || die "dpkg-buildpackage did not produce $deb_name"
mkdir -p "$output_dir"
cp "$scratch/$deb_name" "$output_dir/"
deb="$(cd "$output_dir" && pwd)/$deb_name"

if [ "$run_lintian" = yes ]; then
    command -v lintian >/dev/null 2>&1 || die "lintian is missing: apt-get install lintian (or pass --no-lintian)"
    say "lintian"
    lintian --fail-on error,warning --info --display-info "$deb" >&2
fi

say "built $deb"
echo "$deb"
