#!/usr/bin/env bash
# Builds ROS 2 Jazzy's tf2 stack (tf2, tf2_msgs, tf2_py, tf2_ros_py) from the vendored sources
# into a virtual environment that holds the ros-jazzy-* wheels, so `import tf2_ros` works there
# with no ROS distro and no setup.bash (what the TF tests need).
#   scripts/build_tf2.sh [VENV]        # VENV defaults to .venv in the repository root
# Sources: $TF2_SOURCES, default <repo>/../shared/vendor/geometry2-jazzy (see its README.md).
# Missing sources are not an error (the TF tests skip). A rebuild happens only when the sources,
# requirements/tf2.txt, this script or the venv's Python change (stamp: VENV/.tf2_build_stamp).
# The build runs under VENV/.tf2_build (build/ and log/); nothing is written into the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "tf2: no virtual environment at $venv (create it with scripts/setup_env.sh)" >&2
  exit 2
fi
venv="$(cd "$venv" && pwd)"
py="$venv/bin/python"
src="${TF2_SOURCES:-$repo/../shared/vendor/geometry2-jazzy}"
reqs="$repo/requirements/tf2.txt"

if [ ! -f "$src/tf2_ros_py/package.xml" ]; then
  echo "tf2: sources not found at $src; the TF tests skip (on a ROS install the distro's tf2_ros is used)"
  exit 0
fi
src="$(cd "$src" && pwd)"

# The wheels' bootstrapper (ros_wheels_bootstrapper.pth) re-executes Python with LD_LIBRARY_PATH
# set for *its* venv unless this guard is set: clear it so a caller's other venv does not leak in.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

stamp="$venv/.tf2_build_stamp"
pyver="$(readlink -f "$py")|$("$py" -S -c 'import sys; print(sys.version)' 2>/dev/null || echo none)"
key="$(
  {
    (cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    echo "python: $pyver"
    echo "venv: $venv"
    sha256sum < "$reqs"
    sha256sum < "${BASH_SOURCE[0]}"
  } | sha256sum | cut -d' ' -f1
)"

tf2_imports() { "$py" -c 'import tf2_ros, tf2_msgs.msg' >/dev/null 2>&1; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && tf2_imports; then
  echo "tf2: cached ($venv)"
  exit 0
fi

start=$(date +%s)
work="$venv/.tf2_build"
mkdir -p "$work"
# one build at a time per venv
if command -v flock >/dev/null 2>&1; then
  exec 9>"$work/lock"
  flock 9
  # another run may have finished the build while this one waited
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && tf2_imports; then
    echo "tf2: cached ($venv)"
    exit 0
  fi
fi
rm -f "$stamp"

echo "tf2: building from $src into $venv (about a minute) ..."
"$py" -m pip install -q --disable-pip-version-check -r "$reqs"

# The wheels' CMake files name the Python and numpy include folders of the machine they were
# built on; point them at this interpreter's own (idempotent: rewrites only what still matches).
"$py" - "$venv/share" <<'EOF'
import os, re, sys, sysconfig
import numpy
py_inc = sysconfig.get_paths()["include"]
np_inc = numpy.get_include()
if not os.path.isfile(os.path.join(py_inc, "Python.h")):
    sys.exit(f"tf2: no Python.h in {py_inc}: install this Python's development headers")
subs = [
    (re.compile(r"/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages/numpy/(?:_core/)?include"), np_inc),
    (re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?"), py_inc),
]
changed = 0
for root, _dirs, files in os.walk(sys.argv[1]):
    for name in files:
        if not name.endswith(".cmake"):
            continue
        path = os.path.join(root, name)
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        if "/opt/python/" not in text:
            continue
        new = text
        for pattern, repl in subs:
            new = pattern.sub(lambda _m, r=repl: r, new)
        if new != text:
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(new)
            changed += 1
print(f"tf2: rewrote baked include paths in {changed} CMake file(s)")
EOF

rm -rf "$work/build" "$work/log"
out="$work/colcon.out"
set +e
(
  cd "$work"
  unset COLCON_PREFIX_PATH AMENT_CURRENT_PREFIX
  export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
  "$venv/bin/colcon" --log-base "$work/log" build \
    --base-paths "$src" --build-base "$work/build" \
    --install-base "$venv" --merge-install \
    --packages-up-to tf2_ros_py \
    --event-handlers console_direct- console_stderr- \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$py"
) >"$out" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "tf2: colcon build failed (exit $rc); full logs under $work/log/latest_build" >&2
  tail -n 15 "$out" >&2
  for pkg in $(sed -n 's/^Failed *<<< \([A-Za-z0-9_]*\).*/\1/p' "$out"); do
    log="$work/log/latest_build/$pkg/stdout_stderr.log"
    if [ -f "$log" ]; then
      echo "---- tail of $log" >&2
      tail -n 40 "$log" >&2
    fi
  done
  exit 1
fi

if ! "$py" -c 'import tf2_ros, tf2_msgs.msg' >"$work/import.out" 2>&1; then
  echo "tf2: built, but 'import tf2_ros, tf2_msgs.msg' fails in $venv:" >&2
  tail -n 20 "$work/import.out" >&2
  exit 1
fi
rm -rf "$work/build"  # keep log/ and colcon.out for reference
echo "$key" > "$stamp"
echo "tf2: built tf2, tf2_msgs, tf2_py, tf2_ros_py into $venv in $(( $(date +%s) - start )) s"
