"""Launcher for the restart test: ``python slow_server.py DATA_DIR PORT``.

Runs the real server (real :func:`convert_video`, checkpoints every 4 frames) on 127.0.0.1,
with a progress hook that sleeps a little per chunk so a test can kill it mid-job.
"""

import sys
import threading
import time
from pathlib import Path

from rvmatte.server.app import ServerConfig
from rvmatte.server.jobs import ConvertRunner
from rvmatte.server.run import serve


class SlowRunner(ConvertRunner):
    def __call__(self, spec, *, progress, cancel, resume):
        def slow(info):
            progress(info)
            time.sleep(0.3)

        return super().__call__(spec, progress=slow, cancel=cancel, resume=resume)


if __name__ == "__main__":
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    config = ServerConfig(data_dir=data_dir, weights=None, checkpoint_frames=4)
    box = {}

    def model():
        if "m" not in box:
            from rvmatte.weights import load_model
            box["m"] = load_model(weights=None)
        return box["m"]

    config.runner = SlowRunner(model, checkpoint_frames=4)
    threading.Thread(target=model, daemon=True).start()  # like the real server's preload
    serve(config, port=port, log_level="warning")
