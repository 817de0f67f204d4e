#!/usr/bin/env bash
# Every check that needs a GPU, in one pass, in three phases (give SECONDS under the device's limit per command):
#   A. at once, since none of them is timed: the tests that start child processes (torchrun, forked gloo groups,
#      signals) with a per-test timeout and their children's output; the whole test suite on a machine where device
#      "auto" means CUDA (among them the gpu-marked tests: every shipped spec a few steps in bf16 on CUDA, eager and
#      compiled); the bijector conformance kit on CUDA (float64); shipped specs trained, sampled and evaluated on
#      CUDA from the command line, eager in fp32 and compiled in bf16;
#   B. alone, since it is timed: compose_gen's step time over hand-written PyTorch for the VAE, IWAE and VQ-VAE;
#   C. alone, with whatever time is left: RealNVP and MAF against plain PyTorch, zuko and nflows; runtime_modes
#      (fp32, bf16, fp16, with and without torch.compile).
# Each stage runs under its own time limit, cut to what is left of the whole pass's; a stage that fails or runs out
# is reported and the next one runs. Each stage's output goes to LOG whole as soon as the stage ends, so a pass killed
# from outside keeps every finished stage. Give SECONDS under the device call's own limit, less the install's time.
#
#     bash benchmarks/gpu_check.sh [LOG] [SECONDS]        # LOG defaults to gpu_check.log, SECONDS to 900
set -u
log=${1:-gpu_check.log}
deadline=$((SECONDS + ${2:-900}))
parts=$(mktemp -d)
: >"$log"

append() {  # append PART to the log whole, one stage at a time, and drop it
    { flock 9 && cat "$1" >&9 && rm -f "$1"; } 9>>"$log"
}
collect() {  # on the way out: the parts of stages still running, cut short
    for part in "$parts"/*; do [[ -e $part ]] && append "$part"; done
    rm -rf "$parts"
}
trap 'collect; exit 143' TERM INT
trap collect EXIT

stage() {  # stage NAME SECONDS COMMAND...: run COMMAND under a time limit, its output to its own part of the log
    local name=$1 limit=$2 start=$SECONDS code
    shift 2
    local part
    part="$parts/$(date +%s%N)-$name"
    ((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
    if ((limit <= 0)); then
        echo "=== $name: skipped, the pass is out of time" | tee "$part"
        return
    fi
    echo "=== $name (limit $limit s): $*" >"$part"
    timeout "$limit" "$@" >>"$part" 2>&1
    code=$?
    echo "=== $name: exit $code after $((SECONDS - start)) s" | tee -a "$part"
    append "$part"
}

train_on_cuda() {  # train_on_cuda OUT STEPS SPEC [--set KEY=VALUE ...]: a short run of a shipped spec, sampled and evaluated
    local out=$1 steps=$2 spec=$3
    shift 3
    rm -rf "$out"
    compose-gen train "$spec" --device cuda --steps "$steps" --out "$out" --no-progress "$@" &&
        compose-gen sample "$out" -n 16 -o "$out/check.png" --device cuda
}
export -f train_on_cuda

export PYTHONUNBUFFERED=1
per_test_timeout=$(python -c 'import pytest_timeout' 2>/dev/null && echo --timeout=60)
stage environment 30 bash -c 'python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())";
    hostname; getent hosts "$(hostname)" || echo "the host name does not resolve"; nproc'

# A: functional checks, side by side
# spawned, not forked, where there is a GPU: each child imports torch afresh (about 85 s in all on two CPU cores)
stage child-processes 300 python -m pytest -p no:cacheprovider -rA --tb=long -n 4 $per_test_timeout \
    tests/runtime/test_distributed.py tests/runtime/test_checkpoint.py::test_sigterm_saves_and_exits_cleanly \
    tests/runtime/test_checkpoint.py::test_sigint_saves_and_resume_continues &
# -vv: addopts' -q and one -v cancel out; a run cut short names each test that ended, and how
stage test-suite 300 python -m pytest -p no:cacheprovider -vv -rfE --durations=20 -n 8 ${per_test_timeout:+--timeout=120} &
stage conformance-cuda 150 python -m pytest -p no:cacheprovider -q -rf -n 2 tests/testing/test_conformance_all.py \
    --bijector-device cuda &
for spec in vae_digits vae_iaf_digits hybrid_vae_flow_digits hvae_digits gan_digits wgan_gp_digits realnvp_digits; do
    stage "cuda-$spec" 150 bash -c 'train_on_cuda "$@"' _ "runs/gpu-$spec" 100 "specs/$spec.yaml" &
done
for spec in realnvp_digits glow_digits vae_digits vqvae_digits gan_digits wgan_gp_digits; do
    stage "compiled-bf16-$spec" 150 bash -c 'train_on_cuda "$@"' _ "runs/gpu-compiled-$spec" 100 "specs/$spec.yaml" \
        --set train.compile=true --set train.precision=bf16 &
done
wait

# B: the timing the latent-model issue asks for, alone
stage latent-step-time 100 python benchmarks/latent_step_time.py --device cuda --threads 1 --steps 25 --repeats 11 \
    --fused-baseline

# C: the other timings, with what is left
stage flows-vs-peers 100 python benchmarks/flows_vs_peers.py --device cuda --steps 1000 --eval-batch 65536 \
    --sample-batch 16384
stage runtime-modes 100 python benchmarks/runtime_modes.py --device cuda --steps 30 --repeats 3
