# CMake generated Testfile for 
# Source directory: /work/wt-tls
# Build directory: /work/wt-tls/build-rel
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
subdirs("tests")
