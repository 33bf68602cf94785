// exitNow(code): _exit(2), past Node's and V8's teardown. Every p2prun command leaves this way once
// its work is done and its output written: Node 24 can hang in its own teardown, the main thread and
// a V8 worker each waiting on the other (seen once in ~100 agent exits of the 32-node benchmark, the
// agent's work long done, so the job's epilog waited; and in CI, a `p2prun describe` that never
// ended). launcher/cli.ts flushes Node's compile cache first, which that teardown would write.
#include <unistd.h>
#include "addon.h"

static napi_value exit_now(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t code = 1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1) napi_get_value_int32(env, argv[0], &code);
  _exit(code);
}

napi_value register_process_exit(napi_env env, napi_value exports) {
  return add_function(env, exports, "exitNow", exit_now);
}
