#!/usr/bin/env bash
# One series of cold-cache export measurements, steps run in the order given, everything logged to $WORK/series.log:
#
#   scripts/bench/cold_series.sh WORK STEP...
#     eb:L:BIN:RUNS   ExportBench --cache both (a cold and a warm one-shot export per run) of the L-layer shape
#                     through BIN/dequant4j, with the I/O bounds measured in the same run
#     peer:L          the Python peer on the L-layer shape, cold, as ../shared/tools/peer/perf_vs_peer.sh runs it
#
# Env: BIG (holds l8/ and l32/, each model/ and adapter/ from make_big_checkpoint.py --layers L --vocab 128256
# --rank 16 --max-shard 5GB), BENCH_JAR (benchmarks/target/benchmarks.jar), JAVA_HOME (25+), and for peer steps
# PEER (the directory of peer_convert.py), PEER_PY (a python with torch and safetensors), BNB (a bitsandbytes source
# tree with its CPU library built). Needs root: the page cache is dropped before every cold run.
set -euo pipefail
work=$1
shift
mkdir -p "$work"
log=$work/series.log
: "${BIG:?}" "${BENCH_JAR:?}" "${JAVA_HOME:?}"

echo "== $(date -u '+%F %T') UTC, $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
for step in "$@"; do
  IFS=: read -r kind layers bin runs <<<"$step"
  echo "-- $step at $(date -u +%T)" | tee -a "$log"
  case $kind in
    eb)
      "$JAVA_HOME/bin/java" --add-modules jdk.incubator.vector -cp "$BENCH_JAR" dev.dequant4j.bench.ExportBench \
        --model "$BIG/l$layers/model" --adapter "$BIG/l$layers/adapter" --launcher "$bin/dequant4j" \
        --cache both --runs "$runs" --threads 2 --dtype f16 --work "$work/eb" 2>&1 | grep -v '^export:' | tee -a "$log"
      ;;
    peer)
      rm -rf "$work/out-peer"
      sync
      echo 3 >/proc/sys/vm/drop_caches
      /usr/bin/time -f "peer L$layers: %e s wall, %U user, %S sys, max RSS %M KB" \
        env OMP_NUM_THREADS=2 "$PEER_PY" "$PEER/peer_convert.py" --bnb "$BNB" --model "$BIG/l$layers/model" \
        --adapter "$BIG/l$layers/adapter" --out "$work/out-peer" --threads 2 --kernels cpu 2>&1 | tail -3 | tee -a "$log"
      rm -rf "$work/out-peer"
      ;;
    *)
      echo "unknown step $step" >&2
      exit 2
      ;;
  esac
done
echo "== done $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
