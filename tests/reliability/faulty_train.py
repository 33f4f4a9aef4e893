"""`python -m wmse_tf.train` with a fault injected: the process SIGKILLs itself mid-write.

  WMSE_FAULT=ckpt_data@8 python -m tests.reliability.faulty_train --flagfile=... --model_dir=...

Faults (test-only; the library has no hook for them, they are monkeypatches here):
  ckpt_data@N   while writing checkpoint ckpt-N: its data file half written, no index
                yet, the `checkpoint` state file not updated (a kill during TF's merge).
  ckpt_state@N  after ckpt-N's files are complete, while the `checkpoint` state file's
                temp copy is half written (a kill inside TF's atomic rename-write).
  export        during the SavedModel export: the temp version dir written, its model
                card half written, not yet renamed into place.
  encoder       during the write of encoder.keras: a half-written temp file.
"""

import os
import signal
import sys
import uuid


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _half(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def install(fault):
    import tensorflow as tf

    kind, _, arg = fault.partition("@")
    if kind in ("ckpt_data", "ckpt_state"):
        step = int(arg)
        real_save = tf.train.CheckpointManager.save

        def save(self, checkpoint_number=None, **kwargs):
            if int(checkpoint_number) != step:
                return real_save(self, checkpoint_number=checkpoint_number, **kwargs)
            prefix = os.path.join(self.directory, f"ckpt-{step}")  # Checkpointer's checkpoint_name
            self.checkpoint.write(prefix)  # complete files, no state-file update
            if kind == "ckpt_data":
                _half(f"{prefix}.data-00000-of-00001")
                os.remove(f"{prefix}.index")
            else:
                state = os.path.join(self.directory, "checkpoint")
                with open(state, "rb") as f:
                    text = f.read()
                with open(f"{state}.tmp{uuid.uuid4().hex}", "wb") as f:
                    f.write(text.replace(b'"ckpt-', f'"ckpt-{step}", "ckpt-'.encode(), 1)[: len(text) // 2])
            _die()

        tf.train.CheckpointManager.save = save
    elif kind == "export":
        from wmse_tf.export import saved_model as export

        def write_json(path, obj):
            with open(path, "w") as f:
                f.write('{"name": "half a card')
            _die()

        export.write_json = write_json
    elif kind == "encoder":
        from wmse_tf.training import trainer

        def save_encoder(encoder, model_dir):
            tmp = os.path.join(model_dir, f".encoder-{uuid.uuid4().hex[:8]}.keras")
            encoder.save(tmp)
            _half(tmp)
            _die()

        trainer.save_encoder = save_encoder
    elif kind:
        raise ValueError(f"unknown WMSE_FAULT={fault!r}")


if __name__ == "__main__":
    from absl import app

    from wmse_tf import train

    install(os.environ.get("WMSE_FAULT", ""))
    app.run(train.main)
