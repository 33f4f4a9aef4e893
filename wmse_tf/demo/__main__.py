"""`python -m wmse_tf.demo`: the demo's command (`wmse_tf.demo.command`)."""

import sys

from wmse_tf import cli
from wmse_tf.demo import command

if __name__ == "__main__":
    cli.run(command.main, argv=command.with_default_flagfile(sys.argv))
