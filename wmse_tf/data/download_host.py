"""Can this machine reach a dataset's download hosts? One TCP connect per host, in seconds.

TFDS downloads through requests with urllib3 retries (10 retries, backoff 0.2 s doubling), so
a refused connection or an unknown host fails after about 3.5 minutes of a progress bar at
0 MiB. `unreachable(urls)` resolves and connects once to each distinct host (or to the proxy
that requests would use for it), all hosts at once, with a short timeout, and says which fail
and why. It sends nothing: reachable means a TCP connection was accepted.

Example:
    >>> download_host.unreachable(["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"])
    {}    # or {'www.cs.toronto.edu:443': 'gaierror: [Errno -2] Name or service not known'}
"""

import socket
import threading
import time
import urllib.parse
import urllib.request

TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def endpoint(url: str):
    """(host, port) that fetching `url` connects to first: its proxy's when one applies, else its own.

    Returns None for URLs that are not fetched over the network by TFDS's downloader (gs://, file
    paths), which the probe skips.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    proxies = urllib.request.getproxies()  # http_proxy, https_proxy, all_proxy, as requests reads them
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if proxy_parts.hostname:
            return proxy_parts.hostname, proxy_parts.port or _DEFAULT_PORTS.get(proxy_parts.scheme, 80)
    return parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]


def _connect(host, port, timeout, results, key):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            results[key] = None
    except OSError as e:
        results[key] = " ".join(f"{type(e).__name__}: {e}".split())


def unreachable(urls, timeout: float = TIMEOUT_S) -> dict:
    """{"host:port": reason} for each host of `urls` that does not accept a TCP connection in `timeout` s.

    Hosts are probed in parallel in daemon threads, so a resolver that never answers (no timeout
    of its own) costs `timeout` seconds and cannot keep the process alive. Empty when all connect.
    """
    targets = {f"{host}:{port}": (host, port) for host, port in filter(None, map(endpoint, urls))}
    results = {}
    threads = []
    for key, (host, port) in targets.items():
        t = threading.Thread(target=_connect, args=(host, port, timeout, results, key), daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout + 1.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))  # still running: the host did not answer in time
    return {key: results.get(key, f"no answer in {timeout:g} s") for key in targets
            if results.get(key, "") is not None}
