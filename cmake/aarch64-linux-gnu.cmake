# Cross-compiling for aarch64 with Debian's multiarch toolchain: crossbuild-essential-arm64
# (aarch64-linux-gnu-gcc/g++) and arm64 -dev packages installed beside the native ones
# (dpkg --add-architecture arm64; apt-get install libssl-dev:arm64). There is no sysroot:
# the cross compiler searches /usr/include and /usr/include/aarch64-linux-gnu itself, and
# arm64 libraries live in /usr/lib/aarch64-linux-gnu. scripts/build-agent-aarch64.sh uses it.
#
#   cmake -S . -B build-aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DCMAKE_BUILD_TYPE=Release -DFDE_BUILD_TESTS=OFF
#   ninja -C build-aarch64 fde-agent
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Programs run on the build machine; libraries must be arm64 ones (/usr/lib/aarch64-linux-gnu
# via CMAKE_LIBRARY_ARCHITECTURE); headers and CMake package files may be shared ones.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# OpenSSL's opensslconf.h differs per architecture; FindOpenSSL must not take the amd64 one.
set(OPENSSL_ROOT_DIR /usr)
set(OPENSSL_INCLUDE_DIR /usr/include)
set(OPENSSL_CRYPTO_LIBRARY /usr/lib/aarch64-linux-gnu/libcrypto.so)
set(OPENSSL_SSL_LIBRARY /usr/lib/aarch64-linux-gnu/libssl.so)

# arm64 programs (tests, `fde-agent --version` in CI) run under QEMU user mode; no
# binfmt_misc registration is needed.
find_program(FDE_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(FDE_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${FDE_QEMU_AARCH64}")
endif()
