package dev.dequant4j.internal.bnb;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.NaturalOrder;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.safetensors.TensorEntry;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Groups the stored tensors of a checkpoint into logical tensors, deciding per tensor from the keys present (never
 * from config.json alone): {@code P.weight.quant_state.bitsandbytes__nf4|fp4} makes {@code P.weight} a 4-bit weight
 * with its {@code .absmax}, {@code .quant_map}, {@code .nested_absmax}, {@code .nested_quant_map}; {@code P.SCB}
 * makes {@code P.weight} an int8 weight (with an optional {@code P.weight_format}); everything else is plain. Each
 * component is looked up by name on its own, so components may live in different shards.
 */
public final class Grouping {
    public static final String QS_NF4 = ".quant_state.bitsandbytes__nf4";
    public static final String QS_FP4 = ".quant_state.bitsandbytes__fp4";
    private static final String QS_PREFIX = ".quant_state.bitsandbytes__";
    static final String[] FOUR_BIT_SUFFIXES = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"};
    static final String[] WEIGHT_FORMATS = {"row", "col32", "col_turing", "col_ampere"};

    private static final System.Logger LOG = System.getLogger("dev.dequant4j");

    private final TensorStore store;
    private final JsonObject config;
    private final Set<String> claimed = new HashSet<>();
    private float[] sharedNestedMap;

    private Grouping(TensorStore store, JsonObject config) {
        this.store = store;
        this.config = config;
    }

    /**
     * Groups all stored tensors; the result is in natural name order.
     *
     * @param config the model's config.json, or null; used only for the legacy {@code "shape": null} quant states
     */
    public static Map<String, LogicalTensor> group(TensorStore store, JsonObject config) {
        // What grouping reads is read ahead with positional reads (a cold mapping would read megabytes around each),
        // and unmapped afterwards: a page-cache folio is mapped whole, up to 2 MiB per component read.
        List<TensorStore.Ref> read = store.refs().values().stream().filter(r -> readWhileGrouping(r.name())).toList();
        store.prefetch(read);
        try {
            return new Grouping(store, config).run();
        } finally {
            store.unmap(read);
        }
    }

    private Map<String, LogicalTensor> run() {
        Map<String, LogicalTensor> out = new TreeMap<>(NaturalOrder.INSTANCE);
        Map<String, TensorStore.Ref> refs = store.refs();
        for (String key : refs.keySet()) {
            if (key.endsWith(".nested_quant_map") && sharedNestedMap == null) {
                TensorStore.Ref r = refs.get(key);
                if (r.entry().dtype() == DType.F32 && r.entry().numel() == 256) {
                    sharedNestedMap = new float[256];
                    r.copyFloats(0, sharedNestedMap, 0, 256);
                }
            }
        }
        for (String key : refs.keySet()) {
            String weightName = null;
            String type = null;
            if (key.endsWith(QS_NF4)) {
                weightName = key.substring(0, key.length() - QS_NF4.length());
                type = "nf4";
            } else if (key.endsWith(QS_FP4)) {
                weightName = key.substring(0, key.length() - QS_FP4.length());
                type = "fp4";
            } else if (key.contains(QS_PREFIX)) {
                // Listing its packed weight as a plain U8 tensor would export garbage.
                int at = key.lastIndexOf(QS_PREFIX);
                throw unsupported(key, key.substring(0, at), "quant state " + key + " has the unknown quant type '"
                        + key.substring(at + QS_PREFIX.length()) + "' (bitsandbytes 4-bit types are nf4 and fp4)");
            }
            if (weightName != null) {
                if (out.containsKey(weightName)) {
                    throw error(key, weightName, "has quant states for both nf4 and fp4");
                }
                out.put(weightName, fourBit(weightName, key, type));
            }
        }
        for (String key : refs.keySet()) {
            if (key.endsWith(".SCB")) {
                String prefix = key.substring(0, key.length() - 4);
                String weightName = prefix + ".weight";
                out.put(weightName, int8(weightName, prefix));
            }
        }
        for (Map.Entry<String, TensorStore.Ref> e : refs.entrySet()) {
            String key = e.getKey();
            if (claimed.contains(key) || out.containsKey(key)) {
                continue;
            }
            checkNotOrphanComponent(key);
            out.put(key, new PlainTensor(e.getValue()));
        }
        return Collections.unmodifiableMap(new LinkedHashMap<>(out));
    }

    private Dequant4jException error(String key, String tensor, String detail) {
        return error(Kind.CORRUPT_INPUT, key, tensor, detail);
    }

    private Dequant4jException unsupported(String key, String tensor, String detail) {
        return error(Kind.UNSUPPORTED_INPUT, key, tensor, detail);
    }

    private Dequant4jException error(Kind kind, String key, String tensor, String detail) {
        TensorStore.Ref r = store.get(key);
        return new Dequant4jException(kind, r != null ? r.path() : null, tensor, detail);
    }

    private TensorStore.Ref component(String weightName, String suffix, boolean required) {
        TensorStore.Ref r = store.get(weightName + suffix);
        if (r == null && required) {
            throw error(weightName, weightName,
                    "missing bitsandbytes component " + weightName + suffix + locationHint());
        }
        if (r != null) {
            claimed.add(r.name());
        }
        return r;
    }

    private String locationHint() {
        return store.index() != null ? " (not in " + store.index().file().getFileName() + ")" : "";
    }

    private FourBitTensor fourBit(String weightName, String qsKey, String type) {
        TensorStore.Ref qsRef = store.get(qsKey);
        claimed.add(qsKey);
        TensorEntry qsEntry = qsRef.entry();
        if (qsEntry.dtype() != DType.U8 || qsEntry.rank() != 1) {
            throw error(qsKey, weightName, "quant state " + qsKey + " must be a 1-D U8 tensor, not "
                    + qsEntry.dtype() + Arrays.toString(qsEntry.shape()));
        }
        if (qsEntry.byteSize() > 1 << 20) {
            throw error(qsKey, weightName, "quant state " + qsKey + " is " + qsEntry.byteSize()
                    + " bytes; a real one is a few hundred");
        }
        QuantState qs;
        try {
            qs = QuantState.parse(qsRef.bytes());
        } catch (JsonException e) {
            throw error(qsKey, weightName, "bad quant state: " + e.getMessage());
        }
        if (!qs.quantType().equals(type)) {
            throw error(qsKey, weightName, "quant state says quant_type " + qs.quantType() + " but its key says "
                    + type);
        }
        TensorStore.Ref weight = store.get(weightName);
        if (weight == null) {
            throw error(qsKey, weightName, "has a quant state (" + qsKey + ") but the packed weight " + weightName
                    + " is missing" + locationHint());
        }
        claimed.add(weightName);
        List<String> components = new ArrayList<>();
        components.add(weightName);

        long[] shape = qs.shape();
        String shapeSource = "";
        if (shape == null) {
            shape = LegacyShapes.fromConfig(config, weightName).orElseThrow(() -> error(qsKey, weightName,
                    "quant state has \"shape\": null (bitsandbytes 0.41.2) and the shape cannot be derived from "
                            + "config.json for this module"));
            shapeSource = " (derived from config.json: the quant state has \"shape\": null)";
        }
        long n = TensorEntry.numel(shape);
        TensorEntry w = weight.entry();
        DType storage = w.dtype();
        if (storage != DType.U8 && storage != DType.I8 && storage != DType.F16 && storage != DType.BF16
                && storage != DType.F32 && storage != DType.F64) {
            throw error(weightName, weightName, "packed 4-bit weight has dtype " + storage
                    + " (quant_storage must be uint8, int8, float16, bfloat16, float32 or float64)");
        }
        boolean columnShape = w.rank() == 1 || (w.rank() == 2 && w.dim(1) == 1);
        if (!columnShape) {
            throw error(weightName, weightName, "packed 4-bit weight has shape " + Arrays.toString(w.shape())
                    + "; bitsandbytes saves [n/2, 1] (a transposed [1, n/2] layout is not supported)");
        }
        long needBytes = (n + 1) / 2;
        if (w.byteSize() != needBytes) {
            throw error(weightName, weightName, "packed 4-bit weight holds " + w.byteSize() + " bytes but "
                    + Arrays.toString(shape) + shapeSource + " (" + n + " elements) needs " + needBytes);
        }

        long nb = (n + qs.blocksize() - 1) / qs.blocksize();
        TensorStore.Ref absmax = component(weightName, ".absmax", true);
        components.add(absmax.name());
        TensorEntry a = absmax.entry();
        if (qs.nested()) {
            if (a.dtype() != DType.U8) {
                throw error(absmax.name(), weightName, "absmax of a double-quantized weight must be U8 codes, not "
                        + a.dtype());
            }
        } else if (a.dtype() != DType.F32 && a.dtype() != DType.F16 && a.dtype() != DType.BF16) {
            throw error(absmax.name(), weightName, "absmax must be F32, not " + a.dtype()
                    + (a.dtype() == DType.U8 ? " (U8 codes need nested_* fields in the quant state)" : ""));
        }
        if (a.numel() != nb) {
            throw error(absmax.name(), weightName, "absmax has " + a.numel() + " entries but " + n
                    + " elements in blocks of " + qs.blocksize() + " need " + nb);
        }
        boolean absmaxTransposed = cpuRepacked(absmax, a, shape, qs);

        TensorStore.Ref quantMap = component(weightName, ".quant_map", true);
        components.add(quantMap.name());
        float[] storedMap = floats(quantMap, 16, weightName);
        float[] code = qs.code();
        for (int i = 0; i < 16; i++) {
            if (storedMap[i] != code[i]) {
                LOG.log(System.Logger.Level.WARNING, weightName + ": stored quant_map differs from bitsandbytes' "
                        + qs.quantType() + " table at index " + i + "; using the built-in table, as bitsandbytes does");
                break;
            }
        }

        float[] nestedMap = null;
        float[] nestedAbsmax = null;
        if (qs.nested()) {
            TensorStore.Ref na = component(weightName, ".nested_absmax", true);
            components.add(na.name());
            long nnb = (nb + QuantState.NESTED_BLOCKSIZE - 1) / QuantState.NESTED_BLOCKSIZE;
            if (na.entry().numel() != nnb || na.entry().dtype() != DType.F32) {
                throw error(na.name(), weightName, "nested_absmax must be F32 with " + nnb + " entries ("
                        + nb + " blocks / 256), not " + na.entry().dtype() + Arrays.toString(na.entry().shape()));
            }
            nestedAbsmax = floats(na, (int) nnb, weightName);
            TensorStore.Ref nm = component(weightName, ".nested_quant_map", false);
            if (nm != null) {
                components.add(nm.name());
                nestedMap = floats(nm, 256, weightName);
            } else if (sharedNestedMap != null) {
                // bitsandbytes 0.41.2 shared one dynamic map across layers and save_pretrained kept only one copy.
                nestedMap = sharedNestedMap;
            } else {
                throw error(qsKey, weightName, "missing bitsandbytes component " + weightName
                        + ".nested_quant_map, and no other weight has one to share" + locationHint());
            }
        } else {
            for (String s : new String[] {".nested_absmax", ".nested_quant_map"}) {
                if (store.get(weightName + s) != null) {
                    throw error(weightName + s, weightName, "has " + weightName + s
                            + " but its quant state has no nested_* fields");
                }
            }
        }
        long stored = 0;
        for (String c : components) {
            stored += store.get(c).entry().byteSize();
        }
        stored += qsEntry.byteSize();
        components.add(qsKey);
        return new FourBitTensor(weightName, qs, shape, weight, absmax, nestedMap, nestedAbsmax,
                List.copyOf(components), stored, absmaxTransposed);
    }

    /**
     * bitsandbytes saves the absmax 1-D, one scale per block in block order. Its CPU kernel repacks a 4-bit weight
     * during a forward pass and keeps the absmax as {@code [in / blocksize, out]} (transposed, in the compute dtype);
     * a model saved after running on the CPU has that absmax, which bitsandbytes itself then reads in the wrong
     * order. With whole blocks per row the transpose is exact, so it is undone, with a warning; any other layout of
     * more than one row and column is refused. A {@code [1, n]} or {@code [n, 1]} absmax is in block order already.
     *
     * @return whether the absmax is stored transposed
     */
    private boolean cpuRepacked(TensorStore.Ref absmax, TensorEntry a, long[] shape, QuantState qs) {
        long[] as = a.shape();
        long vectorDims = Arrays.stream(as).filter(d -> d != 1).count();
        if (as.length <= 1 || vectorDims <= 1) {
            return false;
        }
        String weightName = absmax.name().substring(0, absmax.name().length() - ".absmax".length());
        boolean repacked = as.length == 2 && shape.length == 2 && shape[1] % qs.blocksize() == 0
                && as[0] == shape[1] / qs.blocksize() && as[1] == shape[0];
        if (!repacked || qs.nested()) {
            throw error(absmax.name(), weightName, "absmax has shape " + Arrays.toString(as) + "; bitsandbytes"
                    + " saves it 1-D, one scale per block (only its CPU repacking's [in/blocksize, out] = ["
                    + (shape.length == 2 ? shape[1] / qs.blocksize() + ", " + shape[0] : "?") + "] of a"
                    + " non-double-quantized weight can be read back)");
        }
        LOG.log(System.Logger.Level.WARNING, weightName + ": absmax is stored " + a.dtype() + " "
                + Arrays.toString(as) + ", the layout bitsandbytes' CPU kernel repacks to during a forward pass (the"
                + " model was saved after running on the CPU); read transposed back into block order, which gives"
                + " the original scales rounded to " + a.dtype());
        return true;
    }

    /** Whether grouping reads the stored tensor {@code key}, not only its header entry. */
    private static boolean readWhileGrouping(String key) {
        return key.contains(QS_PREFIX) || key.endsWith(".quant_map") || key.endsWith(".nested_absmax")
                || key.endsWith(".nested_quant_map") || key.endsWith(".SCB") || key.endsWith(".weight_format");
    }

    private float[] floats(TensorStore.Ref r, int expected, String weightName) {
        TensorEntry e = r.entry();
        if (e.dtype() != DType.F32 || e.numel() != expected) {
            throw error(r.name(), weightName, r.name() + " must be F32 with " + expected + " entries, not "
                    + e.dtype() + Arrays.toString(e.shape()));
        }
        float[] f = new float[expected];
        r.copyFloats(0, f, 0, expected);
        return f;
    }

    private Int8Tensor int8(String weightName, String prefix) {
        String scbKey = prefix + ".SCB";
        TensorStore.Ref scbRef = store.get(scbKey);
        claimed.add(scbKey);
        TensorStore.Ref weight = store.get(weightName);
        if (weight == null) {
            throw error(scbKey, weightName, "has " + scbKey + " but the int8 weight " + weightName + " is missing"
                    + locationHint());
        }
        claimed.add(weightName);
        TensorEntry w = weight.entry();
        if (w.dtype() != DType.I8 || w.rank() != 2) {
            throw error(weightName, weightName, "int8 weight must be a 2-D I8 tensor, not " + w.dtype()
                    + Arrays.toString(w.shape()));
        }
        TensorEntry s = scbRef.entry();
        if (s.dtype() != DType.F32 || s.rank() != 1 || s.dim(0) != w.dim(0)) {
            throw error(scbKey, weightName, "SCB must be F32 [" + w.dim(0) + "] (one scale per row), not "
                    + s.dtype() + Arrays.toString(s.shape()));
        }
        if (w.dim(0) > Integer.MAX_VALUE - 8) {
            throw error(scbKey, weightName, "too many rows");
        }
        float[] scb = new float[(int) w.dim(0)];
        scbRef.copyFloats(0, scb, 0, scb.length);
        List<String> components = new ArrayList<>(List.of(weightName, scbKey));
        long stored = w.byteSize() + s.byteSize();
        TensorStore.Ref fmt = store.get(prefix + ".weight_format");
        if (fmt != null) {
            claimed.add(fmt.name());
            components.add(fmt.name());
            stored += fmt.entry().byteSize();
            long code = weightFormat(fmt, weightName);
            if (code != 0) {
                String name = code > 0 && code < WEIGHT_FORMATS.length ? WEIGHT_FORMATS[(int) code] : "unknown";
                throw unsupported(fmt.name(), weightName, "weight_format " + code + " (" + name + ") is a GPU tile layout "
                        + "from bitsandbytes 0.43-0.44 whose permutation is only defined by running its CUDA kernels; "
                        + "only the row format (0) is supported: re-save the model with a current bitsandbytes");
            }
        }
        return new Int8Tensor(weightName, weight, scb, List.copyOf(components), stored);
    }

    private long weightFormat(TensorStore.Ref fmt, String weightName) {
        TensorEntry e = fmt.entry();
        if (e.numel() != 1) {
            throw error(fmt.name(), weightName, "weight_format must be a scalar, not " + Arrays.toString(e.shape()));
        }
        byte[] b = fmt.bytes();
        return switch (e.dtype()) {
            case U8 -> b[0] & 0xFF;
            case I8 -> b[0];
            case I16, U16, I32, U32, I64, U64 -> {
                long v = 0;
                for (int i = b.length - 1; i >= 0; i--) {
                    v = (v << 8) | (b[i] & 0xFF);
                }
                yield v;
            }
            default -> throw error(fmt.name(), weightName, "weight_format must be an integer, not " + e.dtype());
        };
    }

    /** A stored component whose quantized weight was not found is an error, not a plain tensor. */
    private void checkNotOrphanComponent(String key) {
        for (String s : FOUR_BIT_SUFFIXES) {
            if (key.endsWith(".weight" + s)) {
                String w = key.substring(0, key.length() - s.length());
                throw error(key, w, "has bitsandbytes component " + key + " but no quant state " + w
                        + ".quant_state.bitsandbytes__nf4|fp4" + locationHint());
            }
        }
        if (key.endsWith(".weight_format")) {
            String p = key.substring(0, key.length() - ".weight_format".length());
            throw error(key, p + ".weight", "has " + key + " but no " + p + ".SCB: an int8 weight needs its row "
                    + "scales" + locationHint());
        }
        if (key.endsWith(".weight") && store.get(key).entry().dtype() == DType.I8 && int8Config()) {
            throw error(key, key, "is an int8 weight of a bitsandbytes 8-bit model but "
                    + key.substring(0, key.length() - 7) + ".SCB is missing" + locationHint());
        }
    }

    private boolean int8Config() {
        if (config == null) {
            return false;
        }
        // Only picks the error message for an I8 weight without SCB, so a malformed block just means "no".
        try {
            JsonObject q = config.optObject("quantization_config").orElse(null);
            return q != null && q.getBoolean("load_in_8bit", false);
        } catch (JsonException e) {
            return false;
        }
    }
}
