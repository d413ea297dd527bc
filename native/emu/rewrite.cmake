# Turns a kernel source into host C++ for the emulation (cmake -DIN=x.cu -DOUT=x.cpp -P rewrite.cmake). Only the
# two constructs that are not C++ change; everything else compiles as written against include/:
#   kernel<<<grid, block, shared, stream>>>(args)  ->  ::dq4j_emu::launcher(kernel, grid, block, shared, stream)(args)
#   extern __shared__ T name[];                    ->  T* name = static_cast<T*>(::dq4j_emu::dynamic_shared());
file(READ ${IN} text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*(<[^<>;]*>)?)<<<([^;]*)>>>\\("
       "::dq4j_emu::launcher(\\1, \\3)(" text "${text}")
string(REGEX REPLACE "extern __shared__ ([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_]) ([A-Za-z_][A-Za-z0-9_]*)\\[\\];"
       "\\1* \\2 = static_cast<\\1*>(::dq4j_emu::dynamic_shared());" text "${text}")
if(text MATCHES "<<<|>>>\\(|extern __shared__")
  message(FATAL_ERROR "${IN}: a launch or dynamic shared array the rewrite does not understand")
endif()
get_filename_component(name ${IN} NAME)
file(WRITE ${OUT} "// Generated from native/src/${name} by native/emu/rewrite.cmake for the host emulation.\n#line 1 \"${IN}\"\n${text}")
