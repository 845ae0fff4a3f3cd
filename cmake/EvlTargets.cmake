# Helpers shared by every stage's CMakeLists: warnings, sanitizers, the LibTorch
# precompiled header, and executables placed in ${CMAKE_BINARY_DIR}/bin.

# evl_target_defaults(<target>): warnings and sanitizers, applied per target so
# that third-party headers (included as -isystem by imported targets) stay quiet.
function(evl_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
                                           $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local>
                                           -Wno-unused-parameter)
  if(EVL_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(EVL_SANITIZE_ADDRESS)
    target_compile_options(${target} PRIVATE -fsanitize=address -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address)
  endif()
  if(EVL_SANITIZE_UNDEFINED)
    target_compile_options(${target} PRIVATE -fsanitize=undefined -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=undefined)
  endif()
endfunction()

# One object library owns the <torch/torch.h> precompiled header (~570 MB, ~16 s
# to build); every LibTorch target reuses it instead of building its own.
add_library(evl_torch_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/torch_pch.cpp)
target_link_libraries(evl_torch_pch PUBLIC ${TORCH_LIBRARIES})
evl_target_defaults(evl_torch_pch)
if(EVL_USE_PCH)
  target_precompile_headers(evl_torch_pch PRIVATE <torch/torch.h>)
endif()

# evl_use_torch(<target>): link LibTorch and reuse the shared precompiled header.
function(evl_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  # GCC 12 reports -Warray-bounds inside LibTorch's headers once they are inlined
  # into our code (c10::ivalue::TupleElements::operator[], ivalue_inl.h:497, reads
  # the 3-element inline buffer only when it holds <= 3 elements, which GCC cannot
  # see): a third-party false positive, so it stays a warning, not an error.
  target_compile_options(${target} PRIVATE -Wno-error=array-bounds)
  if(EVL_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM evl_torch_pch)
  endif()
endfunction()

# evl_add_tool(<exe-name> <source> LIBS <libs...>): a thin main in bin/.
function(evl_add_tool name source)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  add_executable(${name}_bin ${source})
  set_target_properties(${name}_bin PROPERTIES OUTPUT_NAME ${name})
  target_link_libraries(${name}_bin PRIVATE ${ARG_LIBS})
  evl_target_defaults(${name}_bin)
endfunction()
