/**
 * dequant4j's CUDA natives for linux-x86_64 (the {@code linux-x86_64} classifier jar), named apart from the library
 * as JavaCPP names its natives modules, so that both jars can be on the module path. It holds no package, only
 * {@code dev/dequant4j/internal/cuda/linux-x86_64/*.so}, and requires what the CUDA backend needs at run time: an
 * application module that requires this one gets the library, JavaCPP and the CUDA presets with their natives.
 */
@SuppressWarnings("module")
open module dev.dequant4j.linux.x86_64 {
    requires transitive dev.dequant4j;
    requires transitive org.bytedeco.javacpp.linux.x86_64;
    requires transitive org.bytedeco.cuda.linux.x86_64;
}
