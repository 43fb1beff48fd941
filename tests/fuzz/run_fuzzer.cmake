# Runs one libFuzzer target for a bounded number of inputs (ctest: fuzz.*). The seeds are copied
# into a corpus directory in the build tree, which libFuzzer also grows with the new inputs it
# finds, so the source tree is never written. Fails, naming the reproducer, on any finding.
#   cmake -DFUZZER=<exe> -DSEEDS=<dir> -DSEED_GLOB=<glob> -DCORPUS=<dir> -DARTIFACTS=<dir>
#         -DRUNS=<n> -DSECONDS=<s> -DMAX_LEN=<bytes> -P run_fuzzer.cmake
# (it stops after RUNS inputs or SECONDS seconds, whichever comes first)
foreach(var FUZZER SEEDS SEED_GLOB CORPUS ARTIFACTS RUNS SECONDS MAX_LEN)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}= is required")
  endif()
endforeach()

file(MAKE_DIRECTORY ${CORPUS} ${ARTIFACTS})
file(GLOB seeds ${SEEDS}/${SEED_GLOB})
if(seeds)
  file(COPY ${seeds} DESTINATION ${CORPUS})
endif()

execute_process(
  COMMAND ${FUZZER} -runs=${RUNS} -max_total_time=${SECONDS} -max_len=${MAX_LEN}
          -artifact_prefix=${ARTIFACTS}/ -print_final_stats=1 ${CORPUS}
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${result}); the input that did it is in ${ARTIFACTS}")
endif()
