/**
 * Everything dequant4j's CUDA backend needs on linux-x86_64, in one module: the library, its natives and the JavaCPP
 * CUDA presets with theirs. An application module requires this one (or the library alone, for the CPU).
 */
module dev.dequant4j.platform {
    requires transitive dev.dequant4j.linux.x86_64;
}
