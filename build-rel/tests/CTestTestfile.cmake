# CMake generated Testfile for 
# Source directory: /work/wt-tls/tests
# Build directory: /work/wt-tls/build-rel/tests
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
add_test([=[unit.test_bus]=] "/work/wt-tls/build-rel/tests/test_bus")
set_tests_properties([=[unit.test_bus]=] PROPERTIES  LABELS "unit" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[unit.test_codec]=] "/work/wt-tls/build-rel/tests/test_codec")
set_tests_properties([=[unit.test_codec]=] PROPERTIES  LABELS "unit" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[unit.test_eventlog_embedded]=] "/work/wt-tls/build-rel/tests/test_eventlog_embedded")
set_tests_properties([=[unit.test_eventlog_embedded]=] PROPERTIES  LABELS "unit" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[unit.test_eventlog_kafka]=] "/work/wt-tls/build-rel/tests/test_eventlog_kafka")
set_tests_properties([=[unit.test_eventlog_kafka]=] PROPERTIES  LABELS "unit" RESOURCE_LOCK "kafka" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[unit.test_http_server]=] "/work/wt-tls/build-rel/tests/test_http_server")
set_tests_properties([=[unit.test_http_server]=] PROPERTIES  LABELS "unit" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[unit.test_https_server]=] "/work/wt-tls/build-rel/tests/test_https_server")
set_tests_properties([=[unit.test_https_server]=] PROPERTIES  LABELS "unit" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[unit.test_projector]=] "/work/wt-tls/build-rel/tests/test_projector")
set_tests_properties([=[unit.test_projector]=] PROPERTIES  LABELS "unit" TIMEOUT "120" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;9;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[e2e.10_core_api]=] "bash" "/work/wt-tls/tests/e2e/10_core_api.sh")
set_tests_properties([=[e2e.10_core_api]=] PROPERTIES  ENVIRONMENT "REGISTRY_BIN=/work/wt-tls/build-rel/registry;E2E_LIB=/work/wt-tls/tests/e2e/lib.sh;E2E_OPS=/work/wt-tls/ops" LABELS "e2e" TIMEOUT "600" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;21;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[e2e.20_crash_embedded]=] "bash" "/work/wt-tls/tests/e2e/20_crash_embedded.sh")
set_tests_properties([=[e2e.20_crash_embedded]=] PROPERTIES  ENVIRONMENT "REGISTRY_BIN=/work/wt-tls/build-rel/registry;E2E_LIB=/work/wt-tls/tests/e2e/lib.sh;E2E_OPS=/work/wt-tls/ops" LABELS "e2e" TIMEOUT "600" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;21;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[e2e.30_split_kafka]=] "bash" "/work/wt-tls/tests/e2e/30_split_kafka.sh")
set_tests_properties([=[e2e.30_split_kafka]=] PROPERTIES  ENVIRONMENT "REGISTRY_BIN=/work/wt-tls/build-rel/registry;E2E_LIB=/work/wt-tls/tests/e2e/lib.sh;E2E_OPS=/work/wt-tls/ops" LABELS "e2e" RESOURCE_LOCK "kafka" TIMEOUT "600" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;21;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[fuzz.codec]=] "bash" "/work/wt-tls/tests/fuzz/run.sh" "codec" "30" "/work/wt-tls/build-rel/fuzz" "/work/wt-tls/build-rel/schemas_embedded.c")
set_tests_properties([=[fuzz.codec]=] PROPERTIES  LABELS "fuzz" TIMEOUT "600" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;39;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
add_test([=[fuzz.http]=] "bash" "/work/wt-tls/tests/fuzz/run.sh" "http" "30" "/work/wt-tls/build-rel/fuzz" "/work/wt-tls/build-rel/schemas_embedded.c")
set_tests_properties([=[fuzz.http]=] PROPERTIES  LABELS "fuzz" TIMEOUT "600" _BACKTRACE_TRIPLES "/work/wt-tls/tests/CMakeLists.txt;39;add_test;/work/wt-tls/tests/CMakeLists.txt;0;")
