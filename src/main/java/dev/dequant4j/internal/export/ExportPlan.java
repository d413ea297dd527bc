package dev.dequant4j.internal.export;

import dev.dequant4j.DType;
import dev.dequant4j.QuantKind;
import dev.dequant4j.internal.HeapBudget;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.lora.MergeOp;
import dev.dequant4j.internal.lora.MergedTensors;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import dev.dequant4j.internal.safetensors.TensorEntry;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * Everything an export will write, computed before any data moves: the output tensors (name, source, merge steps,
 * dtype, shape), their placement in shards, and the units of work. A unit is a run of whole rows (or, without merge
 * steps, of elements) of one tensor whose output bytes are contiguous in the file; units are numbered in file order.
 *
 * <p>The shards are dealt to {@link #lanes} lanes (shard {@code i} to lane {@code i % lanes}); each lane has a
 * writer and a hasher that take its units strictly in order, so every shard is written front to back in one pass
 * and hashed on the way. One lane's SHA-256 runs at about 1.4 GB/s on one core, slower than several cores produce,
 * so machines with many cores write and hash several shards at once. Workers take units in {@link #dispatch} order,
 * which interleaves the lanes by their byte position so that they advance together.
 */
public final class ExportPlan {
    /**
     * One output tensor.
     *
     * @param mergeSteps how many adapter merge steps change it (their payloads are loaded only when it is produced)
     * @param raw       copied byte for byte (a non-float tensor); {@code dtype} is then the stored dtype
     * @param transpose the source is {@code [out, in]} and the output {@code [in, out]} (bnb-quantized Conv1D weights)
     * @param onDevice  produced whole by the CUDA backend
     */
    public record OutputTensor(String name, LogicalTensor source, int mergeSteps, DType dtype, long[] shape,
                               boolean raw, boolean transpose, boolean onDevice) {
        public OutputTensor {
            shape = shape.clone();
        }

        @Override
        public long[] shape() {
            return shape.clone();
        }

        public long numel() {
            return TensorEntry.numel(shape);
        }

        /** Rows of the merge view: {@code shape[0]} (1 for a scalar). */
        public long rows() {
            return MergeOp.rows(shape);
        }

        /** Columns of the merge view: {@code numel / rows}. */
        public long cols() {
            return MergeOp.cols(shape, numel());
        }

        /**
         * Rows of the view the merge steps run on: the source's {@code shape[0]} for a transposed tensor (the steps
         * were planned against the source layout, {@code [out, in]}), else {@link #rows}.
         */
        public long mergeRows() {
            return transpose ? MergeOp.rows(source.shape()) : rows();
        }

        /** Columns of the view the merge steps run on (see {@link #mergeRows}). */
        public long mergeCols() {
            return transpose ? MergeOp.cols(source.shape(), source.numel()) : cols();
        }

        public long byteSize() {
            return dtype.byteSize(numel());
        }

        public QuantKind sourceKind() {
            return source.kind();
        }

        /**
         * Reads the base values of output elements {@code [start, start + count)} as float32; a tensor whose rows an
         * adapter resized reads zeros past its source's end ({@link MergedTensors#readBase}).
         */
        public void readBase(long start, float[] dst, int off, int count) {
            MergedTensors.readBase(source, start, dst, off, count);
        }
    }

    /**
     * A unit of work: elements {@code [start, start + count)} of a tensor (bytes, for a raw tensor), written at
     * {@code fileOffset} of shard {@code shard}.
     */
    public record Unit(int seq, int tensorIndex, long start, long count, int shard, long fileOffset, long byteSize,
                       boolean lastOfTensor) {}

    /**
     * The data section of every output file starts at a multiple of 4096 (the header is padded with spaces, which
     * the safetensors format allows): with tensor sizes that are multiples of 4 KiB, as in every LLM, each unit then
     * starts on a block boundary and goes to the disk with direct I/O without being copied.
     */
    static final int DATA_ALIGNMENT = 4096;

    private final List<OutputTensor> tensors;
    private final ShardedLayout layout;
    private final List<Unit> units;
    private final List<List<Unit>> laneUnits;
    private final List<List<Integer>> laneShards;
    private final List<Unit> dispatch;

    private ExportPlan(List<OutputTensor> tensors, ShardedLayout layout, List<Unit> units, int lanes) {
        this.tensors = tensors;
        this.layout = layout;
        this.units = units;
        int shards = layout.shards().size();
        int n = Math.max(1, Math.min(lanes, shards));
        List<List<Unit>> lu = new ArrayList<>();
        List<List<Integer>> ls = new ArrayList<>();
        for (int l = 0; l < n; l++) {
            lu.add(new ArrayList<>());
            ls.add(new ArrayList<>());
        }
        for (int s = 0; s < shards; s++) {
            ls.get(s % n).add(s);
        }
        for (Unit u : units) {
            lu.get(u.shard() % n).add(u);
        }
        this.laneUnits = lu.stream().map(Collections::unmodifiableList).toList();
        this.laneShards = ls.stream().map(Collections::unmodifiableList).toList();
        this.dispatch = interleave(laneUnits);
    }

    /** All lanes' units, ordered by the bytes each lane will have produced before the unit, then by lane. */
    private static List<Unit> interleave(List<List<Unit>> lanes) {
        record Keyed(long before, int lane, Unit unit) {}
        List<Keyed> keyed = new ArrayList<>();
        for (int l = 0; l < lanes.size(); l++) {
            long before = 0;
            for (Unit u : lanes.get(l)) {
                keyed.add(new Keyed(before, l, u));
                before += u.byteSize();
            }
        }
        keyed.sort(Comparator.comparingLong(Keyed::before).thenComparingInt(Keyed::lane)
                .thenComparingInt(k -> k.unit().seq()));
        return keyed.stream().map(Keyed::unit).toList();
    }

    /**
     * @param tensors   the output tensors, in output order
     * @param unitBytes target output bytes per unit (units of merged tensors hold at least one whole row)
     * @param lanes     shards written and hashed at once (at most the number of shards)
     */
    public static ExportPlan build(List<OutputTensor> tensors, long maxShardBytes, long unitBytes, int lanes) {
        HeapBudget.require(null, "an export of " + tensors.size() + " tensors",
                HeapBudget.PER_EXPORT_TENSOR * tensors.size());
        List<ShardedLayout.Spec> specs = new ArrayList<>(tensors.size());
        for (OutputTensor t : tensors) {
            specs.add(new ShardedLayout.Spec(t.name(), t.dtype(), t.shape()));
        }
        ShardedLayout layout = ShardedLayout.plan(specs, maxShardBytes, DATA_ALIGNMENT);
        Map<String, Integer> index = new java.util.HashMap<>();
        for (int i = 0; i < tensors.size(); i++) {
            index.put(tensors.get(i).name(), i);
        }
        List<Unit> units = new ArrayList<>();
        for (ShardedLayout.Shard shard : layout.shards()) {
            for (ShardedLayout.Placement p : shard.placements()) {
                int ti = index.get(p.spec().name());
                OutputTensor t = tensors.get(ti);
                addUnits(units, ti, t, p, unitBytes);
            }
        }
        return new ExportPlan(Collections.unmodifiableList(tensors), layout, Collections.unmodifiableList(units),
                lanes);
    }

    /** A plan whose file layout and units the caller made (in file order, numbered by {@code seq}). */
    static ExportPlan of(List<OutputTensor> tensors, ShardedLayout layout, List<Unit> units, int lanes) {
        return new ExportPlan(List.copyOf(tensors), layout, List.copyOf(units), lanes);
    }

    private static void addUnits(List<Unit> units, int ti, OutputTensor t, ShardedLayout.Placement p, long unitBytes) {
        long total;
        long step;
        if (t.raw()) {
            total = t.byteSize();
            step = Math.max(1, unitBytes);
        } else {
            total = t.numel();
            long perElem = t.dtype().bits() / 8;
            step = Math.max(1, unitBytes / perElem);
            if (t.transpose() || t.onDevice()) {
                step = Math.max(1, total);
            } else if (t.mergeSteps() > 0) {
                long cols = Math.max(1, t.cols());
                step = Math.max(1, step / cols) * cols;
            }
        }
        if (total == 0) {
            units.add(new Unit(units.size(), ti, 0, 0, p.shard(), p.fileOffset(), 0, true));
            return;
        }
        for (long s = 0; s < total; s += step) {
            long c = Math.min(step, total - s);
            long off = t.raw() ? s : t.dtype().byteSize(s);
            long bytes = t.raw() ? c : t.dtype().byteSize(c);
            units.add(new Unit(units.size(), ti, s, c, p.shard(), p.fileOffset() + off, bytes, s + c == total));
        }
    }

    public List<OutputTensor> tensors() {
        return tensors;
    }

    public ShardedLayout layout() {
        return layout;
    }

    /** Every unit, in file order (shard by shard). */
    public List<Unit> units() {
        return units;
    }

    public int lanes() {
        return laneUnits.size();
    }

    /** The units of one lane, in its order: its shards ascending, each front to back. */
    public List<Unit> laneUnits(int lane) {
        return laneUnits.get(lane);
    }

    /** The shards of one lane, ascending. */
    public List<Integer> laneShards(int lane) {
        return laneShards.get(lane);
    }

    /** The order in which workers take units: every lane's units in that lane's order, the lanes interleaved. */
    public List<Unit> dispatch() {
        return dispatch;
    }

    /** Output bytes of all files, headers included. */
    public long totalFileBytes() {
        return layout.totalFileBytes();
    }
}
