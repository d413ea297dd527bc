#!/usr/bin/env bash
# GPU validation of the CUDA backend, in two halves:
#
#   scripts/gpu-check.sh prepare   on the build machine (JDK 25, Maven, nvcc 13, cmake): builds with -Pcuda and packs
#                                  a jlink'd JRE, the jars, the natives and the GPU tests, xz-compressed, into
#                                  .device/payload.tar.xz (kept out of git), as ../shared/tools/pack-runtime does;
#                                  fails when the working tree plus .device would exceed the GPU host's 64 MiB
#                                  upload limit.
#   scripts/gpu-check.sh run       on the GPU host (no JDK, no Maven, no network needed): unpacks the payload, probes
#                                  CUDA and stops with the probe's reason when it is not usable; otherwise prints
#                                  card, driver and runtime, runs the tests tagged gpu with the JUnit console launcher,
#                                  then the kernel benchmark (CudaBench), then an end-to-end export of a generated
#                                  Llama-3-8B-shaped 2-layer checkpoint with an r=16 adapter on --backend cuda and cpu,
#                                  compared tensor by tensor (ExportParity), then the export's wall time against the
#                                  host's I/O bound (ExportBench, 1 GB shards: cuda with all cores; cpu with 3
#                                  workers, and with all cores), and writes everything to $OUT/results.txt (OUT
#                                  defaults to target/gpu-check; JUnit XML reports go to $OUT/junit). Every step has
#                                  a time limit, so that one run fits in 7 minutes with room for a rerun.
#
# Environment for run: GPU_CHECK_REPS (benchmark repetitions, default 20), GPU_CHECK_SKIP_TESTS=1,
# GPU_CHECK_SKIP_BENCH=1, GPU_CHECK_SKIP_EXPORT=1 or GPU_CHECK_SKIP_THROUGHPUT=1 to leave a part out, the limits in
# seconds GPU_CHECK_TESTS_S (150), GPU_CHECK_BENCH_S (60), GPU_CHECK_EXPORT_S (75) and GPU_CHECK_THROUGHPUT_S (35 per
# configuration, three of them; with the 30 s probe at most 7 minutes in all), JAVA_OPTS (extra JVM flags, e.g.
# -Ddequant4j.cuda.device=1). Exit status: 0 all passed, 1 a step failed or ran out of time, 3 CUDA not usable.
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
  cp $(ls target/dequant4j-*.jar | grep -v -e -cli.jar -e -cli-classes.jar -e -sources.jar -e -javadoc.jar -e -tests.jar) "$lib/"
  # What ../shared/tools/pack-runtime does, plus java.xml for the console launcher's XML reports (and without its
  # check for a .git directory, which a git worktree does not have).
  local stage=target/gpu-check/device
  rm -rf "$stage" && mkdir -p "$stage/lib"
  "$JAVA_HOME/bin/jlink" \
    --add-modules java.base,java.logging,java.management,jdk.management,java.xml,jdk.unsupported,jdk.incubator.vector \
    --strip-debug --no-header-files --no-man-pages --compress=zip-9 --output "$stage/jre" 2>/dev/null
  cp "$lib"/*.jar "$stage/lib/"
  # The tests and the fixtures they read (expected outputs are not needed: the GPU tests compute theirs on the CPU).
  mkdir -p "$stage/test-classes"
  cp -r target/test-classes/. "$stage/test-classes/"
  find "$stage/test-classes/fixtures/expected" -name '*.safetensors' -delete
  # The end-to-end export check lives in the benchmarks module (it generates its own checkpoint).
  mvn -q -B install -Pcuda -Dcuda.nvcc="$nvcc" -DskipTests
  mvn -q -B -f benchmarks/pom.xml package
  mkdir -p "$stage/bench" && cp benchmarks/target/benchmarks.jar "$stage/bench/"
  git rev-parse --short HEAD > "$stage/COMMIT"
  git status --porcelain | grep -q . && echo "(with uncommitted changes)" >> "$stage/COMMIT" || true
  # Unpacked it is about 60 MiB (the JRE alone 49): compressed it travels.
  rm -rf .device && mkdir -p .device
  tar -C "$stage" -cf - . | xz -T2 -6 > .device/payload.tar.xz
  local limit=$((64 << 20)) tree device
  tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  device=$(du -cb .device | tail -1 | cut -f1)
  echo "gpu-check: .device/payload.tar.xz $((device >> 20)) MiB ($(du -sm "$stage" | cut -f1) MiB unpacked), working tree $((tree >> 20)) MiB"
  if (( tree + device > limit )); then
    echo "gpu-check: the working tree and .device together are $(((tree + device) >> 20)) MiB, over the GPU host's 64 MiB upload limit" >&2
    exit 1
  fi
  echo "gpu-check: .device is ready; on the GPU host run scripts/gpu-check.sh run (carry .device)"
}

# Runs a step with a time limit; a step that runs out says so in the results.
bounded() {
  local limit=$1; shift
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if (( rc == 124 || rc == 137 )); then
    echo "gpu-check: step stopped after its ${limit}s limit: $*"
  fi
  return $rc
}

run() {
  [[ -f .device/payload.tar.xz ]] || { echo "gpu-check: no .device/payload.tar.xz (run scripts/gpu-check.sh prepare on the build machine)" >&2; exit 1; }
  local out=${OUT:-target/gpu-check}
  mkdir -p "$out"
  local results=$out/results.txt
  local dev=${TMPDIR:-/tmp}/dequant4j-device
  rm -rf "$dev" && mkdir -p "$dev"
  xz -dc .device/payload.tar.xz | tar -C "$dev" -xf -
  # The transfer may drop executable bits.
  chmod +x "$dev"/jre/bin/* "$dev"/jre/lib/jspawnhelper 2>/dev/null || true
  local java=$dev/jre/bin/java
  # libcudart.so.13 is found through the loader path; add the usual toolkit directories.
  local cuda_lib
  for cuda_lib in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $cuda_lib ]] && LD_LIBRARY_PATH=$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
  local cp="$dev/test-classes:$dev/lib/*"
  local jvm=(--enable-native-access=ALL-UNNAMED -Xmx16g -Ddequant4j.cpu=scalar
    -Dorg.bytedeco.javacpp.cachedir="${TMPDIR:-/tmp}/dequant4j-javacpp-cache" ${JAVA_OPTS:-})
  {
    echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    echo "== built from commit $(cat "$dev/COMMIT" 2>/dev/null || echo unknown)"
    echo "== card, driver"
    timeout 20 nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,ecc.mode.current,pcie.link.gen.max,pcie.link.width.max \
      --format=csv 2>&1 || echo "nvidia-smi failed"
    echo "== CUDA runtime"
    ls -l /usr/local/cuda*/lib64/libcudart.so.13* 2>/dev/null || echo "no libcudart.so.13 under /usr/local/cuda*"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "== CPU"
    lscpu | head -20
    echo "== java"
    "$java" -version 2>&1
  } | tee "$results"
  # Without usable CUDA every GPU test skips and the launcher still exits 0: stop here rather than spend device
  # time on the rest.
  local probe
  probe=$(bounded 30 "$java" "${jvm[@]}" -cp "$cp" dev.dequant4j.internal.cuda.ProbeMain 2>&1 | tail -1) || true
  echo "== CUDA probe: $probe" | tee -a "$results"
  if [[ $probe != true\|* ]]; then
    echo "gpu-check: CUDA is not usable here, nothing run: ${probe#*|}" | tee -a "$results" >&2
    return 3
  fi
  local status=0
  if [[ ${GPU_CHECK_SKIP_TESTS:-0} != 1 ]]; then
    echo "== GPU tests (JUnit console launcher, tag gpu)" | tee -a "$results"
    bounded "${GPU_CHECK_TESTS_S:-150}" "$java" "${jvm[@]}" -cp "$cp" org.junit.platform.console.ConsoleLauncher execute --disable-banner \
      --disable-ansi-colors --details=tree --include-tag gpu --reports-dir "$out/junit" \
      --select-class dev.dequant4j.internal.cuda.CudaBackendGpuTest \
      --select-class dev.dequant4j.internal.cuda.CudaDequantGpuTest \
      --select-class dev.dequant4j.internal.cuda.CudaMergeGpuTest 2>&1 | tee -a "$results" || status=1
  fi
  if [[ ${GPU_CHECK_SKIP_BENCH:-0} != 1 ]]; then
    echo "== kernel benchmark (CudaBench)" | tee -a "$results"
    bounded "${GPU_CHECK_BENCH_S:-60}" "$java" "${jvm[@]}" -cp "$cp" dev.dequant4j.internal.cuda.CudaBench "${GPU_CHECK_REPS:-20}" 2>&1 \
      | tee -a "$results" || status=1
  fi
  if [[ ${GPU_CHECK_SKIP_EXPORT:-0} != 1 ]]; then
    echo "== end-to-end export, cuda vs cpu (ExportParity)" | tee -a "$results"
    # The library classes come from the benchmarks jar; the natives and the presets from .device/lib.
    bounded "${GPU_CHECK_EXPORT_S:-75}" "$java" "${jvm[@]}" --add-modules jdk.incubator.vector -Ddequant4j.cpu=auto \
      -cp "$dev/bench/benchmarks.jar:$dev/lib/*" dev.dequant4j.bench.ExportParity \
      --layers 2 --rank 16 --work "${TMPDIR:-/tmp}/dequant4j-parity" 2>&1 | tee -a "$results" || status=1
  fi
  if [[ ${GPU_CHECK_SKIP_THROUGHPUT:-0} != 1 ]]; then
    local cores; cores=$(nproc)
    local cfg
    for cfg in "cuda $cores" "cpu 3" "cpu $cores"; do
      set -- $cfg
      echo "== export throughput (ExportBench --backend $1 --threads $2, L=2, r=16)" | tee -a "$results"
      bounded "${GPU_CHECK_THROUGHPUT_S:-35}" "$java" "${jvm[@]}" --add-modules jdk.incubator.vector -Ddequant4j.cpu=auto \
        -cp "$dev/bench/benchmarks.jar:$dev/lib/*" dev.dequant4j.bench.ExportBench \
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
