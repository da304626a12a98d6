#!/usr/bin/env bash
# Mutation testing of dgm_ext with mutmut 3: by default dgm_ext/train, dgm_ext/vae and
# dgm_ext/ops/_registration.py ([tool.mutmut] of pyproject.toml); with MUTATION_PACKAGE, one of
# dgm_ext/gan, dgm_ext/flows, dgm_ext/metrics. Not part of CI (a full run takes hours on 2 cores).
# How to read the results: docs/MUTATION.md.
#
#   tools/mutation.sh                       # every mutant of the configured modules
#   tools/mutation.sh 'dgm_ext.train.ema*'  # only the mutants whose name matches (fnmatch globs)
#   tools/mutation.sh 'dgm_ext.ops._registration*' 'dgm_ext.train.checkpoint*'
#   MUTATION_PACKAGE=gan MUTATION_SAMPLE=250 MUTATION_SEED=0 tools/mutation.sh
#                                           # a fixed random sample of 250 mutants of dgm_ext/gan
#
# Mutant names are <module>.x_<function>__mutmut_<n> (methods: <module>.xǁ<Class>ǁ<method>__mutmut_<n>).
#
# Environment:
#   PYTHON             interpreter with torch, mutmut>=3.8 and dgm_ext installed NON-editable
#                      (pip install --no-build-isolation .); default: python3
#   MUTATION_PACKAGE   gan | flows | metrics: mutate only dgm_ext/<package>/*.py, with that
#                      package's tests (below); unset: pyproject.toml's [tool.mutmut] as it is
#   MUTATION_SAMPLE=N  test a fixed random sample of N mutants: once mutmut has generated them,
#                      random.Random(MUTATION_SEED).sample(sorted(names), N); the names are
#                      written to $MUTATION_DIR/mutants/sample.txt. Ignored when globs are given.
#   MUTATION_SEED      seed of the sample; default 0
#   MUTATION_DIR       scratch copy the run happens in (mutmut writes mutants/ there and keeps
#                      its results between runs); default: /tmp/dgm_ext-mutation, or
#                      /tmp/dgm_ext-mutation-<package> with MUTATION_PACKAGE (each package's
#                      stats and results are kept apart: their test selections differ)
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
PACKAGE=${MUTATION_PACKAGE:-}
SAMPLE=${MUTATION_SAMPLE:-}
SEED=${MUTATION_SEED:-0}
# The tests of each package: the test files that exercise it in-process, as pytest file globs
# (python_files), so that a new test file matching them joins the selection without a config
# change (a config change resets every cached result). tests/test_<package>_mutation.py hold
# the tests written against survivors. DESELECT: tests that cannot run on mutants:
# torch.compile(fullgraph=True) of mutated code fails, as mutmut's trampolines break the graph.
DESELECT=""
case "$PACKAGE" in
"") ;;
gan) TESTS="test_gan_*.py" ;;
flows)
    TESTS="test_flows_*.py test_ops_flows.py"
    DESELECT="tests/test_flows_realnvp.py::test_compiled_log_prob_matches_eager"
    ;;
metrics) TESTS="test_metrics*.py" ;;
*)
    echo "mutation.sh: MUTATION_PACKAGE must be gan, flows or metrics, not '$PACKAGE'" >&2
    exit 2
    ;;
esac
WORK=${MUTATION_DIR:-/tmp/dgm_ext-mutation${PACKAGE:+-$PACKAGE}}
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
if [ -n "$PACKAGE" ]; then
    # Replace [tool.mutmut] in the copy's pyproject.toml (the checkout's stays as it is).
    "$PY" - "$WORK/pyproject.toml" "$PACKAGE" "$TESTS" $DESELECT <<'PYEOF'
import json, re, sys
from pathlib import Path

path, package, tests, deselect = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-o", f"python_files={tests}"]
for test in deselect:
    args += ["--deselect", test]
section = f"""[tool.mutmut]
source_paths = ["dgm_ext"]
only_mutate = ["dgm_ext/{package}/*.py"]
pytest_add_cli_args_test_selection = ["tests"]
pytest_add_cli_args = {json.dumps(args)}
process_isolation = "forkserver"

"""
text, n = re.subn(r"^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", section, path.read_text(), flags=re.M | re.S)
assert n == 1, "no [tool.mutmut] section in pyproject.toml"
path.write_text(text)
PYEOF
    echo "mutation.sh: mutating dgm_ext/$PACKAGE/*.py, tests: tests/{$TESTS}${DESELECT:+ but $DESELECT}"
fi

# 3. Run. One OpenMP thread per test process: the machines have 2 cores.
cd "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DGM_EXT_NO_DOWNLOAD=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)
if [ -n "$SAMPLE" ] && [ $# -eq 0 ]; then
    # Generate the mutants the way `mutmut run` begins (it then regenerates only changed
    # files), and draw the sample from the sorted names of all of them.
    "$PY" - "$SAMPLE" "$SEED" <<'PYEOF'
import json, os, random, sys
from pathlib import Path

from mutmut.__main__ import create_mutants, set_mutant_under_test
from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

k, seed = int(sys.argv[1]), int(sys.argv[2])
set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
copy_src_dir()
copy_also_copy_files()
setup_source_paths()
create_mutants(1)
names = sorted(
    key
    for meta in Path("mutants/dgm_ext").rglob("*.py.meta")
    for key in json.loads(meta.read_text()).get("exit_code_by_key", {})
)
sample = sorted(random.Random(seed).sample(names, min(k, len(names))))
Path("mutants/sample.txt").write_text("".join(n + "\n" for n in sample))
print(f"mutation.sh: sample of {len(sample)} of the {len(names)} mutants (seed {seed}),"
      f" names in {Path.cwd()}/mutants/sample.txt")
PYEOF
    mapfile -t NAMES <mutants/sample.txt
    set -- "${NAMES[@]}"
fi
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
total = 0
for meta in sorted(Path("mutants/dgm_ext").rglob("*.py.meta")):
    data = json.loads(meta.read_text())
    total += len(data.get("exit_code_by_key", {}))
    codes = {k: v for k, v in data.get("exit_code_by_key", {}).items()
             if not patterns or any(fnmatch.fnmatch(k, p) for p in patterns)}
    if not codes:
        continue
    # -9 (mutmut says "segfault") is the SIGKILL of the CPU-time hard limit it sets for
    # each mutant: a mutant that runs forever (e.g. a loop that never ends), i.e. a timeout.
    c = Counter("timeout" if v == -9 else STATUS[v] for v in codes.values())
    rows.append((str(meta.relative_to("mutants"))[: -len(".meta")], len(codes), c))
    survivors += [k for k, v in codes.items() if STATUS[v] in ("survived", "no tests")]
if patterns:
    print(f"selected: {sum(r[1] for r in rows)} of the {total} mutants of the mutated files")
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
