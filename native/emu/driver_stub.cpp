// libcuda.so.1 for the host emulation: the presets' runtime binding (libjnicudart.so) names the driver library,
// and binds its functions lazily; dequant4j never calls them, so an empty library satisfies the loader.
extern "C" int dq4j_emu_no_driver_api(void) { return 0; }
