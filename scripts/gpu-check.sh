#!/usr/bin/env bash
# GPU validation of the CUDA backend, in two halves:
#
#   scripts/gpu-check.sh prepare   on the build machine (JDK 25, Maven, nvcc 13, cmake): builds with -Pcuda and packs
#                                  a jlink'd JRE, the jars, the natives and the GPU tests into .device/ (kept out of
#                                  git; about 60 MB), as ../shared/tools/pack-runtime does.
#   scripts/gpu-check.sh run       on the GPU host (no JDK, no Maven, no network needed): prints card, driver and
#                                  runtime, runs the tests tagged gpu with the JUnit console launcher, then the kernel
#                                  benchmark (CudaBench), then an end-to-end export of a generated Llama-3-8B-shaped
#                                  2-layer checkpoint with an r=16 adapter on --backend cuda and cpu, compared tensor
#                                  by tensor (ExportParity), then the export's wall time against the host's I/O bound
#                                  (ExportBench, 1 GB shards: cuda with all cores; cpu with 3 workers, one shard at a
#                                  time, and with all cores, a shard written and hashed per four workers), and writes
#                                  everything to $OUT/results.txt (OUT defaults to target/gpu-check; JUnit XML
#                                  reports go to $OUT/junit).
#
# Environment for run: GPU_CHECK_REPS (benchmark repetitions, default 20), GPU_CHECK_SKIP_TESTS=1,
# GPU_CHECK_SKIP_BENCH=1, GPU_CHECK_SKIP_EXPORT=1 or GPU_CHECK_SKIP_THROUGHPUT=1 to leave a part out, JAVA_OPTS
# (extra JVM flags, e.g. -Ddequant4j.cuda.device=1).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
  local jdk=${JAVA_HOME:-}
  [[ -x ${jdk}/bin/java ]] || jdk=$(ls -d /usr/lib/jvm/temurin-25* 2>/dev/null | head -1)
  [[ -x ${jdk}/bin/java ]] || { echo "gpu-check: no JDK 25 (set JAVA_HOME)" >&2; exit 1; }
  export JAVA_HOME=$jdk
  local nvcc=${CUDACXX:-}
  [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
  [[ -z $nvcc ]] && nvcc=$(command -v nvcc || true)
  [[ -x $nvcc ]] || { echo "gpu-check: no nvcc (set CUDACXX)" >&2; exit 1; }
  mvn -q -B -Pcuda -Dcuda.nvcc="$nvcc" -DskipTests package
  local junit; junit=$(sed -n 's:.*<junit.version>\(.*\)</junit.version>.*:\1:p' pom.xml)
  local lib=target/gpu-check/lib
  rm -rf target/gpu-check && mkdir -p "$lib"
  mvn -q -B dependency:copy-dependencies -DincludeGroupIds=org.bytedeco -DoutputDirectory="$lib"
  # The JUnit console launcher bundles the platform and the Jupiter engine (1.x goes with Jupiter 5.x).
  mvn -q -B dependency:copy -Dartifact="org.junit.platform:junit-platform-console-standalone:${junit/#5/1}" \
    -DoutputDirectory="$lib"
  # Of the presets' JNI libraries only the runtime's is loaded; drop cuBLAS, NPP, ... (30 MB unpacked).
  local presets; presets=$(ls "$lib"/cuda-*-linux-x86_64.jar)
  local slim=target/gpu-check/slim
  mkdir -p "$slim" && (cd "$slim" && "$JAVA_HOME/bin/jar" xf "../../../$presets" \
    org/bytedeco/cuda/linux-x86_64/libjnicudart.so META-INF/MANIFEST.MF META-INF/maven)
  rm "$presets" && "$JAVA_HOME/bin/jar" cfm "$presets" "$slim/META-INF/MANIFEST.MF" -C "$slim" org -C "$slim" META-INF/maven
  cp $(ls target/dequant4j-*.jar | grep -v -e -cli.jar -e -tests.jar) "$lib/"
  # What ../shared/tools/pack-runtime does, plus java.xml for the console launcher's XML reports (and without its
  # check for a .git directory, which a git worktree does not have).
  rm -rf .device && mkdir -p .device/lib
  "$JAVA_HOME/bin/jlink" \
    --add-modules java.base,java.logging,java.management,jdk.management,java.xml,jdk.unsupported,jdk.incubator.vector \
    --strip-debug --no-header-files --no-man-pages --compress=zip-9 --output .device/jre 2>/dev/null
  cp "$lib"/*.jar .device/lib/
  # The tests and the fixtures they read (expected outputs are not needed: the GPU tests compute theirs on the CPU).
  mkdir -p .device/test-classes
  cp -r target/test-classes/. .device/test-classes/
  find .device/test-classes/fixtures/expected -name '*.safetensors' -delete
  # The end-to-end export check lives in the benchmarks module (it generates its own checkpoint).
  mvn -q -B install -Pcuda -Dcuda.nvcc="$nvcc" -DskipTests
  mvn -q -B -f benchmarks/pom.xml package
  mkdir -p .device/bench && cp benchmarks/target/benchmarks.jar .device/bench/
  git rev-parse --short HEAD > .device/COMMIT
  git status --porcelain | grep -q . && echo "(with uncommitted changes)" >> .device/COMMIT || true
  echo "gpu-check: .device is ready ($(du -sm .device | cut -f1) MiB); on the GPU host run scripts/gpu-check.sh run"
}

run() {
  local java=.device/jre/bin/java
  [[ -x $java ]] || { echo "gpu-check: no .device/jre (run scripts/gpu-check.sh prepare on the build machine)" >&2; exit 1; }
  local out=${OUT:-target/gpu-check}
  mkdir -p "$out"
  local results=$out/results.txt
  # libcudart.so.13 is found through the loader path; add the usual toolkit directories.
  local cuda_lib
  for cuda_lib in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $cuda_lib ]] && LD_LIBRARY_PATH=$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
  local cp=".device/test-classes:.device/lib/*"
  local jvm=(--enable-native-access=ALL-UNNAMED -Xmx16g -Ddequant4j.cpu=scalar
    -Dorg.bytedeco.javacpp.cachedir="${TMPDIR:-/tmp}/dequant4j-javacpp-cache" ${JAVA_OPTS:-})
  {
    echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    echo "== built from commit $(cat .device/COMMIT 2>/dev/null || echo unknown)"
    echo "== card, driver"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,ecc.mode.current,pcie.link.gen.max,pcie.link.width.max \
      --format=csv 2>&1 || echo "nvidia-smi failed"
    echo "== CUDA runtime"
    ls -l /usr/local/cuda*/lib64/libcudart.so.13* 2>/dev/null || echo "no libcudart.so.13 under /usr/local/cuda*"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "== CPU"
    lscpu | head -20
    echo "== java"
    "$java" -version 2>&1
  } | tee "$results"
  local status=0
  if [[ ${GPU_CHECK_SKIP_TESTS:-0} != 1 ]]; then
    echo "== GPU tests (JUnit console launcher, tag gpu)" | tee -a "$results"
    "$java" "${jvm[@]}" -cp "$cp" org.junit.platform.console.ConsoleLauncher execute --disable-banner \
      --disable-ansi-colors --details=tree --include-tag gpu --reports-dir "$out/junit" \
      --select-class dev.dequant4j.internal.cuda.CudaBackendGpuTest \
      --select-class dev.dequant4j.internal.cuda.CudaDequantGpuTest \
      --select-class dev.dequant4j.internal.cuda.CudaMergeGpuTest 2>&1 | tee -a "$results" || status=1
  fi
  if [[ ${GPU_CHECK_SKIP_BENCH:-0} != 1 ]]; then
    echo "== kernel benchmark (CudaBench)" | tee -a "$results"
    "$java" "${jvm[@]}" -cp "$cp" dev.dequant4j.internal.cuda.CudaBench "${GPU_CHECK_REPS:-20}" 2>&1 \
      | tee -a "$results" || status=1
  fi
  if [[ ${GPU_CHECK_SKIP_EXPORT:-0} != 1 ]]; then
    echo "== end-to-end export, cuda vs cpu (ExportParity)" | tee -a "$results"
    # The library classes come from the benchmarks jar; the natives and the presets from .device/lib.
    "$java" "${jvm[@]}" --add-modules jdk.incubator.vector -Ddequant4j.cpu=auto \
      -cp ".device/bench/benchmarks.jar:.device/lib/*" dev.dequant4j.bench.ExportParity \
      --layers 2 --rank 16 --work "${TMPDIR:-/tmp}/dequant4j-parity" 2>&1 | tee -a "$results" || status=1
  fi
  if [[ ${GPU_CHECK_SKIP_THROUGHPUT:-0} != 1 ]]; then
    local cores; cores=$(nproc)
    local cfg
    for cfg in "cuda $cores" "cpu 3" "cpu $cores"; do
      set -- $cfg
      echo "== export throughput (ExportBench --backend $1 --threads $2, L=2, r=16)" | tee -a "$results"
      "$java" "${jvm[@]}" --add-modules jdk.incubator.vector -Ddequant4j.cpu=auto \
        -cp ".device/bench/benchmarks.jar:.device/lib/*" dev.dequant4j.bench.ExportBench \
        --layers 2 --rank 16 --runs 3 --backend "$1" --threads "$2" --max-shard-bytes 1000000000 \
        --work "${TMPDIR:-/tmp}/dequant4j-parity" 2>&1 \
        | tee -a "$results" || status=1
    done
  fi
  echo "== gpu-check exit status $status" | tee -a "$results"
  return $status
}

case ${1:-} in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
