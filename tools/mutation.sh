#!/usr/bin/env bash
# Mutation testing of dgm_ext/train, dgm_ext/vae and dgm_ext/ops/_registration.py with mutmut 3.
# Not part of CI (a full run takes hours on 2 cores). How to read the results: docs/MUTATION.md.
#
#   tools/mutation.sh                       # every mutant of the configured modules
#   tools/mutation.sh 'dgm_ext.train.ema*'  # only the mutants whose name matches (fnmatch globs)
#   tools/mutation.sh 'dgm_ext.ops._registration*' 'dgm_ext.train.checkpoint*'
#
# Mutant names are <module>.x_<function>__mutmut_<n> (methods: <module>.xǁ<Class>ǁ<method>__mutmut_<n>).
#
# Environment:
#   PYTHON             interpreter with torch, mutmut>=3.8 and dgm_ext installed NON-editable
#                      (pip install --no-build-isolation .); default: python3
#   MUTATION_DIR       scratch copy the run happens in (mutmut writes mutants/ there and keeps
#                      its results between runs); default: /tmp/dgm_ext-mutation
#   MUTATION_CHILDREN  mutants tested in parallel; default 1 (each one runs torch tests)
#   MUTATION_FRESH=1   forget earlier results and start over
#
# Why a scratch copy: mutmut writes mutants/ into the folder it runs in and copies the package
# there; the copy needs the compiled dgm_ext/_C*.so beside the mutated .py files, so this script
# takes the .so of the installed dgm_ext and places it in the copy. An editable install cannot
# be used: its import hook sends `import dgm_ext` to the source checkout, so the tests would never
# see a mutant (mutmut's forced-fail check stops the run in that case).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${MUTATION_DIR:-/tmp/dgm_ext-mutation}
CHILDREN=${MUTATION_CHILDREN:-1}
PYBIN=$(cd / && "$PY" -c 'import sys; print(sys.executable)')
MUTMUT=$(dirname "$PYBIN")/mutmut

if [ ! -x "$MUTMUT" ]; then
    echo "mutation.sh: no mutmut beside $PYBIN; install it: $PY -m pip install 'mutmut>=3.8,<4'" >&2
    exit 2
fi

# 1. The compiled extension of the installed (non-editable) dgm_ext, imported from outside the
#    source tree so that a checkout cannot shadow it.
SO=$(cd / && "$PY" -c 'import dgm_ext._C as c; print(c.__file__)') || {
    echo "mutation.sh: cannot import dgm_ext._C with $PY; build it with" >&2
    echo "  $PY -m pip install --no-build-isolation .    # from $REPO, not editable" >&2
    exit 2
}
PKG=$(cd / && "$PY" -c 'import dgm_ext, os; print(os.path.dirname(dgm_ext.__file__))')
case "$PKG" in
"$REPO"/*)
    echo "mutation.sh: dgm_ext is an editable install ($PKG): mutants would be invisible." >&2
    echo "  Use a separate venv with: $PY -m pip install --no-build-isolation .   (not -e)" >&2
    exit 2
    ;;
esac

# 2. Scratch copy of the tracked and untracked-but-not-ignored files. tar keeps modification
#    times, so mutmut regenerates only the files that changed since the last run (it re-tests
#    every mutant the names select, changed or not).
if [ "${MUTATION_FRESH:-0}" = 1 ]; then rm -rf "$WORK"; fi
mkdir -p "$WORK"
(cd "$REPO" && git ls-files -co --exclude-standard -z |
    xargs -0 -I{} sh -c 'test -e "$1" && printf "%s\0" "$1"' _ {} |
    tar --null -T - -cf -) | tar -xf - -C "$WORK"
cp -p "$SO" "$WORK/dgm_ext/"
# keep the copy inside mutants/ in step with a rebuilt extension
if [ -d "$WORK/mutants/dgm_ext" ]; then cp -p "$SO" "$WORK/mutants/dgm_ext/"; fi
echo "mutation.sh: extension $SO -> $WORK/dgm_ext/"

# 3. Run. One OpenMP thread per test process: the machines have 2 cores.
cd "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DGM_EXT_NO_DOWNLOAD=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)
status=0
"$MUTMUT" run --max-children "$CHILDREN" "$@" || status=$?
echo "mutation.sh: mutmut run exited $status after $(($(date +%s) - start)) s"

# 4. Score per module, and the survivors (mutmut show <name> prints a mutant's diff).
"$PY" - "$@" <<'EOF'
import fnmatch, json, sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code as STATUS

patterns = sys.argv[1:]
rows, survivors = [], []
for meta in sorted(Path("mutants/dgm_ext").rglob("*.py.meta")):
    data = json.loads(meta.read_text())
    codes = {k: v for k, v in data.get("exit_code_by_key", {}).items()
             if not patterns or any(fnmatch.fnmatch(k, p) for p in patterns)}
    if not codes:
        continue
    c = Counter(STATUS[v] for v in codes.values())
    rows.append((str(meta.relative_to("mutants"))[: -len(".meta")], len(codes), c))
    survivors += [k for k, v in codes.items() if STATUS[v] in ("survived", "no tests")]
tot = Counter()
print(f"{'module':42} {'mutants':>7} {'killed':>7} {'surv':>5} {'notest':>6} {'tmout':>5} {'other':>5} {'score':>6}")
for path, n, c in rows + [("TOTAL", sum(r[1] for r in rows), sum((r[2] for r in rows), Counter()))]:
    other = n - c["killed"] - c["survived"] - c["no tests"] - c["timeout"] - c["not checked"]
    done = n - c["not checked"]
    score = 100 * (c["killed"] + c["timeout"]) / done if done else 0
    print(f"{path:42} {n:7} {c['killed']:7} {c['survived']:5} {c['no tests']:6} {c['timeout']:5} {other:5} {score:5.1f}%"
          + (f"  ({c['not checked']} not checked)" if c["not checked"] else ""))
Path("mutants/survivors.txt").write_text("".join(s + "\n" for s in survivors))
print(f"survivors (incl. 'no tests'): {len(survivors)}, listed in {Path.cwd()}/mutants/survivors.txt;"
      f" diff of one: cd {Path.cwd()} && mutmut show <name>")
EOF
exit "$status"
