"""Benchmarks printing figures measured in one run; each names its machine first."""


def machine_line():
    """The first line of every benchmark: CPU model, cores, vector/bf16 flags, oneDNN's state, load."""
    import os

    from wmse_tf.training import resolve

    from wmse_tf import onednn

    return (f"machine: {resolve.cpu_description()}; {onednn.current().line()}; "
            f"load average {os.getloadavg()[0]:.1f}")
