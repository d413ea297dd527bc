package dev.dequant4j.internal.cuda;

import static org.bytedeco.cuda.global.cudart.cudaEventCreateWithFlags;
import static org.bytedeco.cuda.global.cudart.cudaEventDestroy;
import static org.bytedeco.cuda.global.cudart.cudaEventDisableTiming;
import static org.bytedeco.cuda.global.cudart.cudaEventRecord;
import static org.bytedeco.cuda.global.cudart.cudaEventSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaMemGetInfo;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaMemsetAsync;
import static org.bytedeco.cuda.global.cudart.cudaSetDevice;
import static org.bytedeco.cuda.global.cudart.cudaStreamCreateWithFlags;
import static org.bytedeco.cuda.global.cudart.cudaStreamDestroy;
import static org.bytedeco.cuda.global.cudart.cudaStreamNonBlocking;
import static org.bytedeco.cuda.global.cudart.cudaStreamSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaStreamWaitEvent;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.bnb.FourBitTensor;
import dev.dequant4j.internal.bnb.Int8Tensor;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.lora.MergeOp;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.SizeTPointer;

/**
 * The CUDA side of {@link CudaBackend}: streams, buffers and the per-tensor pipeline. A tensor is cut into chunks
 * (element ranges, or whole rows when merge steps need them); each chunk goes pinned staging → async H2D →
 * kernels → async D2H → the destination, and two slots with their own streams alternate so that one chunk's host
 * copies overlap the other's transfers and kernels. Everything a tensor needs besides its base data (absmax,
 * adapter matrices, DoRA magnitudes) is uploaded once per tensor as "constants".
 */
final class CudaEngine implements AutoCloseable {
    /**
     * @param chunkElements most elements per chunk (the staging size); smaller chunks are used when device memory
     *                      is short
     * @param fusedMerge    F16/BF16 merges with fused multiply-adds in the rank loop: fewer instructions at high
     *                      rank, but no longer the CPU's bits (see docs/CUDA.md for the bound); off by default, so
     *                      that every merge is bit-identical to the scalar oracle
     */
    record Options(long chunkElements, boolean fusedMerge) {
        static final String CHUNK_PROPERTY = "dequant4j.cuda.chunkElements";
        static final String FUSED_PROPERTY = "dequant4j.cuda.fusedMerge";

        static Options fromSystemProperties() {
            return new Options(Long.getLong(CHUNK_PROPERTY, 1L << 24), Boolean.getBoolean(FUSED_PROPERTY));
        }
    }

    private static final long ALIGN = 256;
    /** Device memory left to the context and to others when sizing chunks. */
    private static final long RESERVE = 64L << 20;

    private final DeviceCheck.Device device;
    private final Options options;
    private final Memory memory = new Memory();
    private final Slot[] slots = new Slot[2];
    private final Memory.Buffer constHost;
    private final Memory.Buffer constDev;
    private final CUevent_st constantsReady = new CUevent_st();
    private final CUevent_st colDone = new CUevent_st();
    private final List<Pointer> handles = new ArrayList<>();

    /** One of the two alternating chunk pipelines. */
    private final class Slot {
        final CUstream_st stream = new CUstream_st();
        final CUevent_st done = new CUevent_st();
        final Memory.Buffer pinnedIn = memory.pinned("input staging");
        final Memory.Buffer pinnedOut = memory.pinned("output staging");
        final Memory.Buffer devIn = memory.device("chunk input");
        final Memory.Buffer devOut = memory.device("chunk output");
        final Memory.Buffer partials = memory.device("DoRA partial sums");
        TensorJob.Chunk pending;
        MemorySegment pendingDst;
    }

    CudaEngine(DeviceCheck.Device device, Options options) {
        this.device = device;
        this.options = options;
        this.constHost = memory.pinned("tensor constants staging");
        this.constDev = memory.device("tensor constants");
        try {
            check(cudaSetDevice(device.index()), "cudaSetDevice");
            event(constantsReady);
            event(colDone);
            for (int i = 0; i < slots.length; i++) {
                Slot s = new Slot();
                slots[i] = s;
                check(cudaStreamCreateWithFlags(s.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
                handles.add(s.stream);
                event(s.done);
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    private void event(CUevent_st e) {
        check(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        handles.add(e);
    }

    DeviceCheck.Device device() {
        return device;
    }

    long deviceBytes() {
        return memory.deviceBytes();
    }

    long pinnedBytes() {
        return memory.pinnedBytes();
    }

    /** Produces the whole tensor into dst (see {@link CudaBackend#materialize}). */
    void materialize(TensorJob plan, MemorySegment dst) {
        if (plan.numel() == 0) {
            return;
        }
        check(cudaSetDevice(device.index()), "cudaSetDevice");
        try (CudaKernels.Source src = new CudaKernels.Source();
             CudaKernels.Step steps = new CudaKernels.Step(Math.max(1, plan.steps().size()))) {
            Tensor t = new Tensor(plan, src, steps);
            t.run(dst);
        } catch (Dequant4jException e) {
            // CUDA calls fail without knowing the tensor (check() is static): name it here.
            throw e.tensor().isPresent() || e.file().isPresent() ? e
                    : new Dequant4jException(e.kind(), null, plan.tensor().name(), e.detail(), e);
        } catch (RuntimeException e) {
            throw new Dequant4jException(Kind.BACKEND, null, plan.tensor().name(), "CUDA backend failed: " + e, e);
        } finally {
            drain();
        }
    }

    /** Waits for both slots' work; after a failure their buffers may be reused only then. */
    private void drain() {
        for (Slot s : slots) {
            if (s != null) {
                cudaStreamSynchronize(s.stream);
                s.pending = null;
                s.pendingDst = null;
            }
        }
    }

    /** One tensor in flight: its constants' layout, the kernel structs, and the sweeps over its chunks. */
    private final class Tensor {
        final TensorJob plan;
        final CudaKernels.Source src;
        final CudaKernels.Step steps;
        final int nsteps;
        final int flags;
        final int outCode;
        final long outSize;
        final long colTiles;
        // constants: offsets into constDev, -1 when absent
        long absmaxOff = -1;
        long nestedMapOff = -1;
        long nestedAbsmaxOff = -1;
        long scbOff = -1;
        final long[] leftOff;
        final long[] rightOff;
        final long[] valuesOff;
        final long[] rowMapOff;
        final long[] magnitudeOff;
        final long[] factorOff;
        final long[] colSumsOff;
        long hostBytes;
        long deviceBytes;
        final List<HostWrite> writes = new ArrayList<>();

        interface HostWrite {
            void write(MemorySegment constants);
        }

        Tensor(TensorJob plan, CudaKernels.Source src, CudaKernels.Step steps) {
            this.plan = plan;
            this.src = src;
            this.steps = steps;
            this.nsteps = plan.steps().size();
            this.flags = options.fusedMerge() && plan.out() != DType.F32 ? CudaKernels.MERGE_FMA : 0;
            this.outCode = dtypeCode(plan.out());
            this.outSize = plan.out().bits() / 8;
            this.colTiles = (plan.cols() + CudaKernels.TILE_COLS - 1) / CudaKernels.TILE_COLS;
            this.leftOff = new long[nsteps];
            this.rightOff = new long[nsteps];
            this.valuesOff = new long[nsteps];
            this.rowMapOff = new long[nsteps];
            this.magnitudeOff = new long[nsteps];
            this.factorOff = new long[nsteps];
            this.colSumsOff = new long[nsteps];
            layOut();
        }

        private long host(long bytes, HostWrite w) {
            long off = hostBytes;
            hostBytes = align(hostBytes + bytes);
            writes.add(c -> w.write(c.asSlice(off, bytes)));
            return off;
        }

        private long floats(float[] values) {
            return host(4L * values.length, c -> MemorySegment.copy(values, 0, c, ValueLayout.JAVA_FLOAT, 0,
                    values.length));
        }

        /** Assigns every constant its place: host-sourced arrays first (one upload), device-only ones after. */
        private void layOut() {
            if (plan.replacement() == null) {
                switch (plan.tensor()) {
                    case FourBitTensor f -> layOutFourBit(f);
                    case Int8Tensor i -> scbOff = floats(i.scb());
                    case PlainTensor p -> { }
                }
            }
            Arrays.fill(magnitudeOff, -1);
            Arrays.fill(factorOff, -1);
            Arrays.fill(colSumsOff, -1);
            for (int i = 0; i < nsteps; i++) {
                switch (plan.steps().get(i)) {
                    case MergeOp.Lora l -> {
                        leftOff[i] = floats(l.left());
                        rightOff[i] = floats(l.right());
                    }
                    case MergeOp.Dora d -> {
                        leftOff[i] = floats(d.left());
                        rightOff[i] = floats(d.right());
                        magnitudeOff[i] = floats(d.magnitude());
                    }
                    case MergeOp.AddScaled a -> valuesOff[i] = floats(a.values());
                    case MergeOp.ReplaceRows rr -> {
                        valuesOff[i] = floats(rr.values());
                        rowMapOff[i] = host(4L * plan.rows(), c -> rowMap(rr, c));
                    }
                    case MergeOp.Replace r -> throw new IllegalStateException("folded into the plan's base");
                }
            }
            deviceBytes = hostBytes;
            for (int i = 0; i < nsteps; i++) {
                if (plan.steps().get(i) instanceof MergeOp.Dora d) {
                    factorOff[i] = deviceOnly(4L * (d.perColumn() ? plan.cols() : plan.rows()));
                    colSumsOff[i] = d.perColumn() ? deviceOnly(8L * plan.cols()) : -1;
                }
            }
        }

        /** The steps, with whole-tensor device pointers (the launcher moves them to each chunk); after upload(). */
        private void describeSteps() {
            for (int i = 0; i < nsteps; i++) {
                CudaKernels.Step s = steps.position(i);
                s.reserved(0).left(0).right(0).factor(0).values(0).row_map(0).r(0).scale(0);
                switch (plan.steps().get(i)) {
                    case MergeOp.Lora l -> s.kind(CudaKernels.STEP_LORA).r(l.r()).scale(l.scale())
                            .left(dev(leftOff[i])).right(dev(rightOff[i]));
                    case MergeOp.Dora d -> s.kind(d.perColumn() ? CudaKernels.STEP_DORA_COL : CudaKernels.STEP_DORA_ROW)
                            .r(d.r()).scale(d.scale()).left(dev(leftOff[i])).right(dev(rightOff[i]))
                            .factor(dev(factorOff[i]));
                    case MergeOp.AddScaled a -> s.kind(CudaKernels.STEP_ADD_SCALED).scale(a.scale())
                            .values(dev(valuesOff[i]));
                    case MergeOp.ReplaceRows rr -> s.kind(CudaKernels.STEP_REPLACE_ROWS).values(dev(valuesOff[i]))
                            .row_map(dev(rowMapOff[i]));
                    case MergeOp.Replace r -> throw new IllegalStateException("folded into the plan's base");
                }
            }
            steps.position(0);
        }

        private void layOutFourBit(FourBitTensor f) {
            long blocks = f.blocks();
            if (f.state().nested()) {
                absmaxOff = host(blocks, c -> f.absmax().copyTo(0, c, 0, blocks));
                nestedMapOff = floats(f.nestedMap());
                nestedAbsmaxOff = floats(f.nestedAbsmax());
                return;
            }
            absmaxOff = host(4 * blocks, c -> {
                if (f.absmax().entry().dtype() == DType.F32 && !f.absmaxTransposed()) {
                    f.absmax().copyTo(0, c, 0, 4 * blocks);
                    return;
                }
                // F16/BF16 scales widen exactly on the host, and a transposed absmax is put in block order, by the
                // CPU path's own code.
                int piece = 1 << 16;
                for (long b = 0; b < blocks; b += piece) {
                    int n = (int) Math.min(piece, blocks - b);
                    MemorySegment.copy(f.absmax(b, n), 0, c, ValueLayout.JAVA_FLOAT, 4 * b, n);
                }
            });
        }

        /** Per row: the index of its replacement (the last one naming it, as MergeRunner applies them), or -1. */
        private void rowMap(MergeOp.ReplaceRows rr, MemorySegment c) {
            c.fill((byte) -1);
            long[] rows = rr.rows();
            for (int j = 0; j < rows.length; j++) {
                if (rows[j] >= 0 && rows[j] < plan.rows()) {
                    c.setAtIndex(ValueLayout.JAVA_INT, rows[j], j);
                }
            }
        }

        private long deviceOnly(long bytes) {
            long off = deviceBytes;
            deviceBytes = align(deviceBytes + bytes);
            return off;
        }

        long dev(long offset) {
            return offset < 0 ? 0 : constDev.address() + offset;
        }

        void run(MemorySegment dst) {
            if (plan.rows() > Integer.MAX_VALUE) {
                throw new Dequant4jException(Kind.BACKEND, null, plan.tensor().name(), plan.rows() + " rows: more than the CUDA "
                        + "backend indexes");
            }
            List<TensorJob.Chunk> chunks = plan.chunks(chunkBudget());
            sizeSlots(chunks);
            upload();
            describeSteps();
            describeSource();
            // Per-column DoRA norms need every row: one sweep each, in step order, before the output sweep.
            for (int j = 0; j < nsteps; j++) {
                if (plan.steps().get(j) instanceof MergeOp.Dora d && d.perColumn()) {
                    columnSweep(chunks, j);
                }
            }
            sweep(chunks, dst, (s, c) -> {
                rowFactors(s, c, nsteps);
                if (plan.hasSteps()) {
                    launched(CudaKernels.dq4j_merge(src, c.row0(), c.rows(), plan.cols(), steps, nsteps, flags,
                            outCode, s.devOut.address(), s.stream.address()), "dq4j_merge");
                } else {
                    launched(CudaKernels.dq4j_dequant(src, c.count(), outCode, s.devOut.address(),
                            s.stream.address()), "dq4j_dequant");
                }
            });
        }

        /** Row factors of the per-row DoRA steps before {@code limit}, for the chunk's rows. */
        private void rowFactors(Slot s, TensorJob.Chunk c, int limit) {
            for (int i = 0; i < limit; i++) {
                if (plan.steps().get(i) instanceof MergeOp.Dora d && !d.perColumn()) {
                    launched(CudaKernels.dq4j_dora_norms(src, c.row0(), c.rows(), plan.cols(), steps, nsteps, i, flags,
                            s.partials.address(), s.stream.address()), "dq4j_dora_norms");
                    launched(CudaKernels.dq4j_dora_row_factors(s.partials.address(), c.rows(), colTiles,
                            dev(magnitudeOff[i]) + 4 * c.row0(), dev(factorOff[i]) + 4 * c.row0(),
                            s.stream.address()), "dq4j_dora_row_factors");
                }
            }
        }

        private void columnSweep(List<TensorJob.Chunk> chunks, int j) {
            long sums = dev(colSumsOff[j]);
            check(cudaMemsetAsync(at(sums), 0, 8 * plan.cols(), slots[0].stream), "cudaMemsetAsync");
            sweep(chunks, null, (s, c) -> {
                rowFactors(s, c, j);
                launched(CudaKernels.dq4j_dora_norms(src, c.row0(), c.rows(), plan.cols(), steps, nsteps, j, flags,
                        s.partials.address(), s.stream.address()), "dq4j_dora_norms");
                // Chunks add their column sums in order, whichever stream they run on: deterministic results.
                check(cudaStreamWaitEvent(s.stream, colDone, 0), "cudaStreamWaitEvent");
                launched(CudaKernels.dq4j_dora_col_accumulate(s.partials.address(),
                        (c.rows() + CudaKernels.TILE_ROWS - 1) / CudaKernels.TILE_ROWS, plan.cols(), sums,
                        s.stream.address()), "dq4j_dora_col_accumulate");
                check(cudaEventRecord(colDone, s.stream), "cudaEventRecord");
            });
            launched(CudaKernels.dq4j_dora_col_factors(sums, plan.cols(), dev(magnitudeOff[j]), dev(factorOff[j]),
                    slots[0].stream.address()), "dq4j_dora_col_factors");
            check(cudaEventRecord(colDone, slots[0].stream), "cudaEventRecord");
            check(cudaStreamWaitEvent(slots[1].stream, colDone, 0), "cudaStreamWaitEvent");
        }

        /** Most elements per chunk: the configured staging size, halved until chunks fit the free memory. */
        private long chunkBudget() {
            long free;
            try (SizeTPointer f = new SizeTPointer(1); SizeTPointer total = new SizeTPointer(1)) {
                check(cudaMemGetInfo(f, total), "cudaMemGetInfo");
                free = f.get();
            }
            long available = free + Memory.capacity(constDev) + reusable() - RESERVE;
            long min = plan.hasSteps() ? plan.cols() : TensorJob.ELEMENT_ALIGN;
            long max = Math.max(min, Math.min(options.chunkElements(), TensorJob.MAX_LAUNCH_ELEMENTS));
            while (true) {
                long need = deviceBytes + slots.length * slotDeviceBytes(plan.chunks(max));
                if (need <= available) {
                    return max;
                }
                if (max <= min) {
                    throw new Dequant4jException(Kind.BACKEND, null, plan.tensor().name(), "out of device memory on "
                            + device.describe() + ": needs " + Memory.size(need) + " (" + Memory.size(deviceBytes)
                            + " of adapter data and scales), " + Memory.size(Math.max(0, available)) + " available");
                }
                max = Math.max(min, max / 2);
            }
        }

        private long reusable() {
            long n = 0;
            for (Slot s : slots) {
                n += Memory.capacity(s.devIn, s.devOut, s.partials);
            }
            return n;
        }

        /** The largest input, output and DoRA-partials bytes of any chunk: what each slot must hold. */
        private record SlotNeed(long in, long out, long partials) {}

        private SlotNeed slotNeed(List<TensorJob.Chunk> chunks) {
            long in = 0;
            long out = 0;
            long partials = 0;
            for (TensorJob.Chunk c : chunks) {
                in = Math.max(in, plan.inBytes(c.elem0(), c.count()));
                out = Math.max(out, c.count() * outSize);
                partials = Math.max(partials, partialBytes(c));
            }
            return new SlotNeed(in, out, partials);
        }

        private long slotDeviceBytes(List<TensorJob.Chunk> chunks) {
            SlotNeed n = slotNeed(chunks);
            return align(n.in()) + align(n.out()) + align(n.partials());
        }

        private long partialBytes(TensorJob.Chunk c) {
            long bytes = 0;
            if (plan.doraSteps(false) > 0) {
                bytes = 8 * c.rows() * colTiles;
            }
            if (plan.doraSteps(true) > 0) {
                long rowTiles = (c.rows() + CudaKernels.TILE_ROWS - 1) / CudaKernels.TILE_ROWS;
                bytes = Math.max(bytes, 8 * rowTiles * plan.cols());
            }
            return bytes;
        }

        private void sizeSlots(List<TensorJob.Chunk> chunks) {
            SlotNeed n = slotNeed(chunks);
            for (Slot s : slots) {
                s.pinnedIn.ensure(Math.max(n.in(), 1));
                s.pinnedOut.ensure(Math.max(n.out(), 1));
                s.devIn.ensure(Math.max(n.in(), 1));
                s.devOut.ensure(Math.max(n.out(), 1));
                s.partials.ensure(Math.max(n.partials(), 8));
            }
        }

        /** Writes the host-sourced constants into pinned memory and uploads them on slot 0; slot 1 waits for it. */
        private void upload() {
            constDev.ensure(Math.max(deviceBytes, 1));
            if (hostBytes == 0) {
                return;
            }
            constHost.ensure(hostBytes);
            MemorySegment c = constHost.segment();
            for (HostWrite w : writes) {
                w.write(c);
            }
            copy(constDev.address(), constHost.address(), hostBytes, cudaMemcpyHostToDevice, slots[0].stream);
            check(cudaEventRecord(constantsReady, slots[0].stream), "cudaEventRecord");
            check(cudaStreamWaitEvent(slots[1].stream, constantsReady, 0), "cudaStreamWaitEvent");
        }

        /** The source fields that do not change between chunks. */
        private void describeSource() {
            src.kind(plan.sourceKind()).dtype(0).block_shift(0).nested(0).cols(0).data(0).absmax(0).absmax_code(0)
                    .nested_map(0).nested_absmax(0).scb(0).nested_offset(0f);
            for (int i = 0; i < 16; i++) {
                src.code(i, 0f);
            }
            if (plan.replacement() != null) {
                src.dtype(CudaKernels.F32);
                return;
            }
            switch (plan.tensor()) {
                case FourBitTensor f -> {
                    float[] code = f.state().code();
                    for (int i = 0; i < 16; i++) {
                        src.code(i, code[i]);
                    }
                    src.block_shift(f.state().blockShift()).nested(f.state().nested() ? 1 : 0);
                    if (f.state().nested()) {
                        src.nested_map(dev(nestedMapOff)).nested_offset(f.state().nestedOffset());
                    }
                }
                case Int8Tensor i -> src.cols(plan.cols());
                case PlainTensor p -> src.dtype(dtypeCode(p.dtype()));
            }
        }

        /** Points the source at a chunk staged in slot s. */
        private void describeChunk(Slot s, TensorJob.Chunk c) {
            src.elem0(c.elem0()).data(s.devIn.address());
            if (plan.replacement() != null) {
                return;
            }
            switch (plan.tensor()) {
                case FourBitTensor f -> {
                    long block = c.elem0() >>> f.state().blockShift();
                    if (f.state().nested()) {
                        src.absmax_code(dev(absmaxOff) + block).nested_absmax(dev(nestedAbsmaxOff) + 4 * (block >>> 8));
                    } else {
                        src.absmax(dev(absmaxOff) + 4 * block);
                    }
                }
                case Int8Tensor i -> src.scb(dev(scbOff) + 4 * (c.elem0() / plan.cols()));
                case PlainTensor p -> { }
            }
        }

        /** Copies the chunk's base data from the mapped checkpoint (or the replacement) into pinned memory. */
        private void stage(TensorJob.Chunk c, MemorySegment pinned) {
            long bytes = plan.inBytes(c.elem0(), c.count());
            if (plan.replacement() != null) {
                int piece = (int) Math.min(c.count(), 1 << 20);
                float[] tmp = new float[piece];
                for (long done = 0; done < c.count(); done += piece) {
                    int n = (int) Math.min(piece, c.count() - done);
                    plan.replacement().readF32(c.elem0() + done, tmp, 0, n);
                    MemorySegment.copy(tmp, 0, pinned, ValueLayout.JAVA_FLOAT, 4 * done, n);
                }
                return;
            }
            switch (plan.tensor()) {
                case FourBitTensor f -> f.weight().copyTo(c.elem0() >>> 1, pinned, 0, bytes);
                case Int8Tensor i -> i.weight().copyTo(c.elem0(), pinned, 0, bytes);
                case PlainTensor p -> p.ref().copyTo(plan.inBytes(0, c.elem0()), pinned, 0, bytes);
            }
        }

        interface Work {
            void enqueue(Slot s, TensorJob.Chunk c);
        }

        /**
         * Runs every chunk through the two slots; with dst, the D2H results are copied into it as each slot comes
         * round again (the host's copy of chunk i-2 overlaps chunk i-1 on the device).
         */
        private void sweep(List<TensorJob.Chunk> chunks, MemorySegment dst, Work work) {
            int i = 0;
            for (TensorJob.Chunk c : chunks) {
                Slot s = slots[i++ & 1];
                retire(s);
                stage(c, s.pinnedIn.segment());
                copy(s.devIn.address(), s.pinnedIn.address(), plan.inBytes(c.elem0(), c.count()),
                        cudaMemcpyHostToDevice, s.stream);
                describeChunk(s, c);
                work.enqueue(s, c);
                if (dst != null) {
                    copy(s.pinnedOut.address(), s.devOut.address(), c.count() * outSize, cudaMemcpyDeviceToHost,
                            s.stream);
                }
                check(cudaEventRecord(s.done, s.stream), "cudaEventRecord");
                s.pending = c;
                s.pendingDst = dst;
            }
            retire(slots[i & 1]);
            retire(slots[(i + 1) & 1]);
        }

        private void retire(Slot s) {
            if (s.pending == null) {
                return;
            }
            check(cudaEventSynchronize(s.done), "cudaEventSynchronize");
            if (s.pendingDst != null) {
                MemorySegment.copy(s.pinnedOut.segment(), 0, s.pendingDst, s.pending.elem0() * outSize,
                        s.pending.count() * outSize);
            }
            s.pending = null;
            s.pendingDst = null;
        }

        private void launched(int rc, String what) {
            if (rc != CudaKernels.OK) {
                throw new Dequant4jException(Kind.BACKEND, null, plan.tensor().name(), what + " failed: "
                        + CudaKernels.dq4j_error_string(rc) + " (" + rc + ")");
            }
        }
    }

    static int dtypeCode(DType d) {
        return switch (d) {
            case F32 -> CudaKernels.F32;
            case F16 -> CudaKernels.F16;
            case BF16 -> CudaKernels.BF16;
            case F64 -> CudaKernels.F64;
            default -> throw new IllegalArgumentException("no kernel dtype for " + d);
        };
    }

    private static long align(long n) {
        return (n + ALIGN - 1) & -ALIGN;
    }

    private static void copy(long dst, long src, long bytes, int kind, CUstream_st stream) {
        if (bytes > 0) {
            check(cudaMemcpyAsync(at(dst), at(src), bytes, kind, stream), "cudaMemcpyAsync");
        }
    }

    /** A JavaCPP pointer at a raw (device or pinned) address, for the presets' memory calls. */
    static Pointer at(long address) {
        return new Address(address);
    }

    private static final class Address extends Pointer {
        Address(long address) {
            super((Pointer) null);
            this.address = address;
        }
    }

    static void check(int rc, String what) {
        if (rc != 0) {
            throw new Dequant4jException(Kind.BACKEND, what + " failed: " + DeviceCheck.error(rc));
        }
    }

    @Override
    public void close() {
        drain();
        for (Pointer h : handles) {
            if (h instanceof CUstream_st s) {
                cudaStreamDestroy(s);
            } else if (h instanceof CUevent_st e) {
                cudaEventDestroy(e);
            }
        }
        handles.clear();
        memory.close();
    }
}
