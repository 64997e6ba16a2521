# An ansible callback for benches/bench.sh: the wall-clock instant each task result arrives,
# one a line, appended to $RECOVER_BENCH_STAMPS. Enabled only by the bench.
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "stamps"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._out = open(os.environ["RECOVER_BENCH_STAMPS"], "a")

    def _stamp(self):
        self._out.write("%.6f\n" % time.time())
        self._out.flush()

    def v2_runner_on_ok(self, result):
        self._stamp()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._stamp()
