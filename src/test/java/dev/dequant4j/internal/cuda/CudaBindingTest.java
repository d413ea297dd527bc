package dev.dequant4j.internal.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What can be checked of the CUDA binding without a GPU: the probe's answer, the packaged natives' dependencies
 * and exports, and the launchers' host-side argument checks (which return before any CUDA call, so they are safe
 * to run on any machine, with or without a driver).
 */
class CudaBindingTest {
    private static final String LIB = "dev/dequant4j/internal/cuda/linux-x86_64/libdequant4j_cuda.so";

    private static boolean nativesBuilt() {
        return CudaBindingTest.class.getClassLoader().getResource(CudaRuntime.NATIVES) != null;
    }

    /** Skips unless our binding loads here (natives built, libcudart.so.13 on the loader path). */
    private static void assumeKernelsLoad() {
        assumeTrue(nativesBuilt(), "the CUDA natives were not built (mvn -Pcuda)");
        String failure = CudaRuntime.loadKernels();
        assumeTrue(failure == null, () -> "the CUDA binding does not load here: " + failure);
    }

    @Test
    void probeAnswersWithAReason() {
        CudaBackend.Availability a = CudaBackend.probe();
        assertNotNull(a.reason());
        assertFalse(a.reason().isBlank());
        if (a.usable()) {
            assertNotNull(a.device());
        } else {
            assertNull(a.device());
            if (!nativesBuilt()) {
                assertTrue(a.reason().contains("natives are not in this build"), a.reason());
            }
        }
    }

    @Test
    void unusableCudaIsAnErrorWithTheSameReason() {
        CudaBackend.Availability a = CudaBackend.probe();
        assumeTrue(!a.usable(), "CUDA is usable here");
        var e = org.junit.jupiter.api.Assertions.assertThrows(dev.dequant4j.Dequant4jException.class,
                CudaBackend::open);
        assertTrue(e.getMessage().contains(a.reason()), e.getMessage());
    }

    @Test
    void libraryNeedsOnlyTheCudaRuntimeAndExportsEveryBoundFunction() throws IOException {
        assumeTrue(nativesBuilt(), "the CUDA natives were not built (mvn -Pcuda)");
        byte[] elf;
        try (InputStream in = getClass().getClassLoader().getResourceAsStream(LIB)) {
            assertNotNull(in, LIB + " is packaged next to the JNI library");
            elf = in.readAllBytes();
        }
        ElfDynamic d = ElfDynamic.parse(elf);
        assertTrue(d.needed().contains("libcudart.so.13"), d.needed().toString());
        for (String lib : d.needed()) {
            assertFalse(lib.startsWith("libcuda.so"), "must load without a driver: " + d.needed());
        }
        List<String> bound = Arrays.stream(CudaKernels.class.getDeclaredMethods())
                .filter(m -> Modifier.isNative(m.getModifiers()) && m.getName().startsWith("dq4j_"))
                .map(Method::getName).sorted().toList();
        assertEquals(10, bound.size(), bound.toString());
        assertEquals(bound, d.exportedFunctions().stream().sorted().toList(),
                "the library exports exactly the functions the binding declares");
    }

    @Test
    void abiAndStructLayoutsMatch() {
        assumeKernelsLoad();
        assertEquals(CudaKernels.ABI_VERSION, CudaKernels.dq4j_abi_version());
        assertEquals(org.bytedeco.javacpp.Loader.sizeof(CudaKernels.Source.class), CudaKernels.dq4j_sizeof_source());
        assertEquals(org.bytedeco.javacpp.Loader.sizeof(CudaKernels.Step.class), CudaKernels.dq4j_sizeof_step());
        try (CudaKernels.Source s = new CudaKernels.Source()) {
            s.data(0x1234_5678_9ABCL).code(15, 1.5f).elem0(1L << 40);
            assertEquals(0x1234_5678_9ABCL, s.data());
            assertEquals(1.5f, s.code(15));
            assertEquals(1L << 40, s.elem0());
        }
    }

    /** A 4-bit source that passes every check, at fake (never dereferenced) addresses. */
    private static CudaKernels.Source valid4bit() {
        CudaKernels.Source s = new CudaKernels.Source();
        s.kind(CudaKernels.SRC_4BIT).dtype(0).block_shift(6).nested(1).elem0(0).cols(0).data(0x10000)
                .absmax(0).absmax_code(0x20000).nested_map(0x30000).nested_absmax(0x40000).scb(0);
        return s;
    }

    @Test
    void dequantArgumentsAreCheckedOnTheHost() {
        assumeKernelsLoad();
        int bad = CudaKernels.ERR_INVALID_ARGUMENT;
        try (CudaKernels.Source s = valid4bit()) {
            assertEquals(bad, CudaKernels.dq4j_dequant(null, 64, CudaKernels.F16, 0x50000, 0));
            assertEquals(bad, CudaKernels.dq4j_dequant(s, -1, CudaKernels.F16, 0x50000, 0));
            assertEquals(bad, CudaKernels.dq4j_dequant(s, 64, CudaKernels.F16, 0, 0), "null output");
            assertEquals(bad, CudaKernels.dq4j_dequant(s, 64, CudaKernels.F64, 0x50000, 0), "F64 is no output");
            assertEquals(CudaKernels.ERR_MISALIGNED, CudaKernels.dq4j_dequant(s, 64, CudaKernels.F16, 0x50008, 0));
            assertEquals(CudaKernels.ERR_MISALIGNED, CudaKernels.dq4j_dequant(s.elem0(16), 64, CudaKernels.F16,
                    0x50000, 0), "4-bit ranges start at multiples of 32");
            s.elem0(0);
            assertEquals(CudaKernels.ERR_MISALIGNED, CudaKernels.dq4j_dequant(s.data(0x10004), 64, CudaKernels.F16,
                    0x50000, 0));
            s.data(0x10000);
            assertEquals(bad, CudaKernels.dq4j_dequant(s.block_shift(4), 64, CudaKernels.F16, 0x50000, 0));
            assertEquals(bad, CudaKernels.dq4j_dequant(s.block_shift(13), 64, CudaKernels.F16, 0x50000, 0));
            s.block_shift(6);
            assertEquals(bad, CudaKernels.dq4j_dequant(s.nested_absmax(0), 64, CudaKernels.F16, 0x50000, 0));
            s.nested_absmax(0x40000).nested(0);
            assertEquals(bad, CudaKernels.dq4j_dequant(s, 64, CudaKernels.F16, 0x50000, 0), "f32 absmax missing");
            assertEquals(bad, CudaKernels.dq4j_dequant(s.kind(9), 64, CudaKernels.F16, 0x50000, 0));
            assertEquals(bad, CudaKernels.dq4j_dequant(s.kind(CudaKernels.SRC_INT8), 64, CudaKernels.F16, 0x50000, 0),
                    "int8 without SCB");
            assertEquals(bad, CudaKernels.dq4j_dequant(s.kind(CudaKernels.SRC_PLAIN).dtype(7), 64, CudaKernels.F16,
                    0x50000, 0));
        }
    }

    @Test
    void mergeArgumentsAreCheckedOnTheHost() {
        assumeKernelsLoad();
        int bad = CudaKernels.ERR_INVALID_ARGUMENT;
        try (CudaKernels.Source s = valid4bit(); CudaKernels.Step steps = new CudaKernels.Step(17)) {
            for (int i = 0; i < 17; i++) {
                CudaKernels.Step st = steps.position(i);
                st.kind(CudaKernels.STEP_LORA).r(4).scale(1f).left(0x60000).right(0x70000).factor(0).values(0)
                        .row_map(0).reserved(0);
            }
            steps.position(0);
            s.elem0(64 * 10);
            assertEquals(bad, CudaKernels.dq4j_merge(s, 9, 4, 64, steps, 1, 0, CudaKernels.F16, 0x50000, 0),
                    "elem0 must be row0 * cols");
            s.elem0(0);
            assertEquals(CudaKernels.ERR_TOO_MANY_STEPS, CudaKernels.dq4j_merge(s, 0, 4, 64, steps, 17, 0,
                    CudaKernels.F16, 0x50000, 0));
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 0, steps, 1, 0, CudaKernels.F16, 0x50000, 0), "cols 0");
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 1L << 20, 1L << 11, steps, 1, 0, CudaKernels.F16, 0x50000,
                    0), "more than 2^30 elements in one launch");
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 64, steps, 1, 2, CudaKernels.F16, 0x50000, 0),
                    "unknown flag");
            assertEquals(CudaKernels.ERR_MISALIGNED, CudaKernels.dq4j_merge(s, 0, 4, 64, steps, 1, 0,
                    CudaKernels.F16, 0x50002, 0));
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 64, steps.r(0), 1, 0, CudaKernels.F16, 0x50000, 0));
            steps.r(4);
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 64, steps.kind(CudaKernels.STEP_DORA_ROW), 1, 0,
                    CudaKernels.F16, 0x50000, 0), "DoRA needs its factors");
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 64, steps.kind(CudaKernels.STEP_REPLACE_ROWS), 1, 0,
                    CudaKernels.F16, 0x50000, 0), "ReplaceRows needs values and a row map");
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 64, steps.kind(0), 1, 0, CudaKernels.F16, 0x50000, 0));
            steps.kind(CudaKernels.STEP_LORA);
            // The steps are an array: element 1 is read at the C struct's stride (an invalid element 1 is found,
            // while element 0 alone passes and only the output's alignment is wrong).
            steps.<CudaKernels.Step>position(1).kind(0);
            steps.position(0);
            assertEquals(CudaKernels.ERR_MISALIGNED, CudaKernels.dq4j_merge(s, 0, 4, 64, steps, 1, 0,
                    CudaKernels.F16, 0x50002, 0));
            assertEquals(bad, CudaKernels.dq4j_merge(s, 0, 4, 64, steps, 2, 0, CudaKernels.F16, 0x50002, 0));
            steps.<CudaKernels.Step>position(1).kind(CudaKernels.STEP_LORA);
            steps.position(0);
            assertEquals(bad, CudaKernels.dq4j_dora_norms(s, 0, 4, 64, steps, 1, 0, 0, 0x80000, 0),
                    "the norm pass needs a DoRA step");
            assertEquals(bad, CudaKernels.dq4j_dora_norms(s, 0, 4, 64, steps, 1, 1, 0, 0x80000, 0));
            steps.kind(CudaKernels.STEP_DORA_COL);
            assertEquals(CudaKernels.ERR_MISALIGNED, CudaKernels.dq4j_dora_norms(s, 0, 4, 64, steps, 1, 0, 0,
                    0x80004, 0));
            assertEquals(bad, CudaKernels.dq4j_dora_row_factors(0, 4, 1, 0x90000, 0xA0000, 0));
            assertEquals(bad, CudaKernels.dq4j_dora_row_factors(0x80000, 4, 0, 0x90000, 0xA0000, 0));
            assertEquals(bad, CudaKernels.dq4j_dora_col_accumulate(0x80000, 1, 0, 0xB0000, 0));
            assertEquals(bad, CudaKernels.dq4j_dora_col_factors(0xB0000, 64, 0, 0xA0000, 0));
        }
    }

    @Test
    void errorCodesHaveMessages() {
        assumeKernelsLoad();
        assertTrue(CudaKernels.dq4j_error_string(CudaKernels.ERR_MISALIGNED).contains("misaligned"));
        assertTrue(CudaKernels.dq4j_error_string(CudaKernels.ERR_TOO_MANY_STEPS).contains("steps"));
        assertTrue(CudaKernels.dq4j_error_string(35).contains("driver"));
    }

    /** Without a driver a launch with valid arguments comes back as an error code, not a crash. */
    @Test
    void launchWithoutDriverReturnsTheCudaError() {
        assumeKernelsLoad();
        CudaBackend.Availability a = CudaBackend.probe();
        assumeTrue(!a.usable() && a.reason().startsWith("no NVIDIA driver"), "a driver is installed");
        try (CudaKernels.Source s = valid4bit()) {
            int rc = CudaKernels.dq4j_dequant(s, 4096, CudaKernels.F16, 0x50000, 0);
            assertEquals(35, rc, CudaKernels.dq4j_error_string(rc));
        }
    }
}
