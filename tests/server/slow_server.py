"""Launcher for the restart test: ``python slow_server.py DATA_DIR PORT [--no-preload]``.

Runs the real server (real :func:`convert_video`, checkpoints every 4 frames) on 127.0.0.1,
with a progress hook that sleeps a little per chunk so a test can kill it mid-job.
"""

import sys
import time
from pathlib import Path

from rvmatte.server.app import ServerConfig
from rvmatte.server.jobs import ConvertRunner
from rvmatte.server.run import serve
from rvmatte.spec import ModelSpec


class SlowRunner(ConvertRunner):
    def __call__(self, job, *, progress, cancel, resume):
        def slow(info):
            progress(info)
            time.sleep(0.3)

        return super().__call__(job, progress=slow, cancel=cancel, resume=resume)


if __name__ == "__main__":
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    spec = ModelSpec(weights=None)
    config = ServerConfig(data_dir=data_dir, spec=spec, checkpoint_frames=4,
                          runner=SlowRunner(spec, checkpoint_frames=4),
                          preload_model="--no-preload" not in sys.argv)
    serve(config, port=port, log_level="warning")
