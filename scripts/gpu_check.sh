#!/usr/bin/env bash
# The one prepared GPU check of vitsae (docs/gpu.md): run it from a fresh copy of the repository on a
# machine with CUDA, PyTorch and Triton but no network and no virtual environment of ours.
#
#   OUT=/some/folder bash scripts/gpu_check.sh         # the GPU check, at most 8 minutes
#   OUT=/tmp/dry bash scripts/gpu_check.sh --dry       # every step it can, on CPU, tiny shapes
#
# Steps (each writes under $OUT, each has its own time limit, a failing step does not stop the others):
#   wheels     missing dependencies unpacked from the wheels in .whl/ into .whl/site-<python version>
#              (WHEELS below; all must be there)
#   smi        nvidia-smi
#   kernels    tests/kernels compiled (fp32, fp16, bf16 against the float64 reference; production tiles;
#              the large-offset case); --dry: the production-tile and fallback tests interpreted
#   memcheck   compute-sanitizer --tool memcheck over a small kernel test (skipped by --dry)
#   bench      scripts/bench_kernels.py --device cuda (D=768 F=24576 K=32/64/128 B=4096, bf16 x; dense
#              baseline; byte and flop floors); --dry: the Triton path interpreted at a tiny shape
#   train      scripts/gpu_check_train.py: `vitsae train` dense vs sparse, tokens/s, FVU/L0 must agree
#   probe      scripts/gpu_probe_kernels.py: each stage of the sparse step timed, what Triton compiled
# Environment: OUT (default out/gpu_check), PYTHON (default python3), CHECK_BUDGET_S (default 470).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0
if [[ "${1:-}" == "--dry" ]]; then DRY=1; elif [[ $# -gt 0 ]]; then
    echo "usage: bash scripts/gpu_check.sh [--dry]" >&2; exit 2
fi
OUT=${OUT:-$ROOT/out/gpu_check}
PY=${PYTHON:-python3}
BUDGET_S=${CHECK_BUDGET_S:-470}
START_S=$SECONDS
mkdir -p "$OUT"
# Unpacked wheels go to a folder per Python version, so one Python's binary wheels never shadow another's.
SITE="$ROOT/.whl/site-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2> /dev/null)"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
cd "$ROOT" || exit 2

# module:wheel-name==version for everything the steps import beyond torch and triton. Download them
# beforehand with the command in docs/gpu.md (safetensors and numpy are binary: cp312, manylinux x86_64).
WHEELS=(
    pytest:pytest==9.2.0
    pluggy:pluggy==1.7.0
    iniconfig:iniconfig==2.3.1
    packaging:packaging==26.4
    pygments:pygments==2.21.0
    hypothesis:hypothesis==6.170.27
    sortedcontainers:sortedcontainers==2.4.0
    tqdm:tqdm==4.70.1
    safetensors:safetensors==0.8.0
    numpy:numpy==2.4.6
)

declare -a SUMMARY=()
note() { SUMMARY+=("$(printf '%-9s %-5s %s' "$1" "$2" "$3")"); }
left() { echo $((BUDGET_S - (SECONDS - START_S))); }

# run_step NAME LIMIT_S CMD...: runs CMD with a time limit (cut to what the budget has left), output in
# $OUT/NAME.log; prints nothing, returns the command's status (124: timed out; 125: no time left).
run_step() {
    local name=$1 limit=$2; shift 2
    local remaining; remaining=$(left)
    if (( remaining < 10 )); then echo "no time left" > "$OUT/$name.log"; return 125; fi
    (( limit > remaining )) && limit=$remaining
    echo "[$(date -u +%T)] $name (limit ${limit}s): $*" >&2
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
}
status_word() { case $1 in 0) echo PASS;; 124|137) echo TIME;; 125) echo SKIP;; *) echo FAIL;; esac; }

# --- wheels -------------------------------------------------------------------------------------
missing_files=()
installed=()
for entry in "${WHEELS[@]}"; do
    module=${entry%%:*}; spec=${entry#*:}; name=${spec%%==*}; version=${spec#*==}
    pattern="$ROOT/.whl/${name//-/_}-${version}-*.whl"
    # shellcheck disable=SC2206
    files=( $pattern )
    [[ -e "${files[0]}" ]] || missing_files+=("$spec")
    if ! "$PY" -c "import $module" 2>/dev/null; then
        if [[ -e "${files[0]}" ]]; then
            "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "${files[0]}" "$SITE" \
                && installed+=("$spec")
        else
            installed+=("$spec (MISSING, no wheel)")
        fi
    fi
done
{
    echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)"
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())" 2>&1
    echo "wheels missing from .whl/: ${missing_files[*]:-none}"
    echo "installed from wheels into ${SITE#"$ROOT/"}: ${installed[*]:-none}"
} > "$OUT/wheels.log"
if [[ ${#missing_files[@]} -eq 0 ]]; then
    note wheels PASS "all ${#WHEELS[@]} wheels present; installed: ${#installed[@]}"
else
    note wheels WARN "${#missing_files[@]} wheels absent from .whl/ (${missing_files[*]}); see docs/gpu.md"
fi

# --- nvidia-smi ---------------------------------------------------------------------------------
if (( DRY )); then
    note smi SKIP "--dry"
else
    run_step smi 20 nvidia-smi; rc=$?
    note smi "$(status_word $rc)" "$(grep -m1 -oE 'NVIDIA [A-Z][A-Za-z0-9 -]+[0-9]+[A-Za-z]*' "$OUT/smi.log" || echo 'see smi.log')"
fi

# --- kernel tests -------------------------------------------------------------------------------
if (( DRY )); then
    run_step kernels 120 env TRITON_INTERPRET=1 "$PY" -m pytest -p no:cacheprovider -W ignore -rs \
        --junitxml="$OUT/kernels.xml" tests/kernels/test_triton_interpret.py tests/kernels/test_host_syncs.py \
        -k "production or dominates"
else
    run_step kernels 100 "$PY" -m pytest -p no:cacheprovider -W ignore -rs \
        --junitxml="$OUT/kernels.xml" tests/kernels
fi
rc=$?
note kernels "$(status_word $rc)" "$(grep -E '[0-9]+ (passed|failed)' "$OUT/kernels.log" | tail -n 1)"

# --- compute-sanitizer memcheck -----------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2> /dev/null | head -n 1)
if (( DRY )); then
    note memcheck SKIP "--dry (no sanitizer on CPU)"
elif [[ -z "$SANITIZER" ]]; then
    note memcheck SKIP "compute-sanitizer not found (PATH, /usr/local/cuda*/bin)"
else
    # No caching allocator, so memcheck sees each tensor's own bounds; the Triton cache from the kernels
    # step spares the compiles. One TopK and one ReLU step at production tiles, and the skewed case.
    run_step memcheck 100 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
        --error-exitcode 3 "$PY" -m pytest -p no:cacheprovider -W ignore tests/kernels/test_triton_interpret.py \
        -k "production_blocks_match and not batchtopk or skewed and small"
    rc=$?
    note memcheck "$(status_word $rc)" "$(grep -m1 -E 'ERROR SUMMARY' "$OUT/memcheck.log" || tail -n 1 "$OUT/memcheck.log")"
fi

# --- kernel benchmark ---------------------------------------------------------------------------
if (( DRY )); then
    run_step bench 120 env TRITON_INTERPRET=1 "$PY" scripts/bench_kernels.py --force-triton --no-sweep \
        --repeats 1 --shapes 64,32,256,8 --paths dense,sparse-train --json "$OUT/bench.json"
else
    run_step bench 140 "$PY" scripts/bench_kernels.py --device cuda --repeats 5 --json "$OUT/bench.json"
fi
rc=$?
note bench "$(status_word $rc)" "$("$PY" - "$OUT/bench.json" <<'EOF' 2>/dev/null || echo 'see bench.log'
import json, sys
res = json.load(open(sys.argv[1]))
parts = []
for row in res["rows"]:
    if row["path"] == "sparse-train":
        dec = row["decode_seconds"] / row["decode_floor_seconds"]
        parts.append(f"K={row['K']}: train-path step {row['speedup']:.2f}x dense, decode {dec:.1f}x floor, "
                     f"{row['syncs']} syncs")
print("; ".join(parts))
EOF
)"

# --- end-to-end training ------------------------------------------------------------------------
if (( DRY )); then
    run_step train 120 "$PY" scripts/gpu_check_train.py --out "$OUT/train" --device cpu --dry
else
    per_run=$(( ($(left) - 40) / 2 )); (( per_run > 55 )) && per_run=55  # two runs, and time for the probe
    run_step train 130 "$PY" scripts/gpu_check_train.py --out "$OUT/train" --device cuda --budget-s "$per_run"
fi
rc=$?
note train "$(status_word $rc)" "$("$PY" - "$OUT/train/train_check.json" <<'EOF' 2>/dev/null || echo 'see train.log'
import json, sys
r = json.load(open(sys.argv[1]))
d, s = r["dense"], r["sparse"]
print(f"tokens/s dense {d.get('tokens_per_s', 0):,.0f} sparse {s.get('tokens_per_s', 0):,.0f}; "
      f"FVU {d.get('fvu', float('nan')):.4f}/{s.get('fvu', float('nan')):.4f} "
      f"L0 {d.get('l0', float('nan')):.1f}/{s.get('l0', float('nan')):.1f} "
      f"at step {r.get('compared_at_step')}: {'agree' if r['agree'] else 'DISAGREE'}")
EOF
)"

# --- stage probe (last: it only adds detail) ----------------------------------------------------
if (( DRY )); then
    run_step probe 60 env TRITON_INTERPRET=1 "$PY" scripts/gpu_probe_kernels.py --dry --json "$OUT/probe.json"
else
    run_step probe 60 "$PY" scripts/gpu_probe_kernels.py --json "$OUT/probe.json"
fi
rc=$?
note probe "$(status_word $rc)" "$("$PY" - "$OUT/probe.json" <<'EOF' 2>/dev/null || echo 'see probe.log'
import json, sys
s = json.load(open(sys.argv[1]))["stages"]
enc = ", ".join(f"{k.split()[2]} {v:.3g}" for k, v in s.items() if k.startswith("encode kernel"))
print(f"encoder kernel ms: {enc}; skewed/uniform scatter {s['skewed / uniform scatter_outer']:.2f}; "
      f"index sets = dense top-k {s['encode index sets equal to dense top-k']:.4f}")
EOF
)"

# --- summary ------------------------------------------------------------------------------------
{
    echo "vitsae GPU check$( ((DRY)) && echo ' (--dry, CPU)'), $(date -u +%FT%TZ), $((SECONDS - START_S)) s, output in $OUT"
    printf '%s\n' "${SUMMARY[@]}"
} | tee "$OUT/summary.txt"
grep -qE '^[a-z]+ +(FAIL|TIME) ' "$OUT/summary.txt" && exit 1
exit 0
