"""Target: the predecessor, ``deepgram-audiocodes-bridge``, as its README runs it:
``DeepgramBridge(config).run()``, its own ``websockets`` server on plain asyncio (its only
dependency), bearer-token auth.

Its code is not part of this project: point ``PREDECESSOR_CHECKOUT`` (or
``--checkout``) at a checkout of https://github.com/deepgram/deepgram-audiocodes-bridge.
It always connects to Deepgram's public URL, so the URL is replaced with ``--agent-url``
in its module before it starts.

Usage::

    PREDECESSOR_CHECKOUT=~/src/deepgram-audiocodes-bridge \\
        python benchmarks/targets/predecessor.py --port 8000 --agent-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", default=os.environ.get("PREDECESSOR_CHECKOUT"),
                    help="a checkout of deepgram-audiocodes-bridge ($PREDECESSOR_CHECKOUT)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    args = ap.parse_args()
    if not args.checkout or not os.path.isdir(os.path.join(args.checkout,
                                                           "deepgram_audiocodes_bridge")):
        sys.exit("predecessor: set PREDECESSOR_CHECKOUT (or --checkout) to a checkout of "
                 "deepgram-audiocodes-bridge")
    sys.path.insert(0, args.checkout)
    from deepgram_audiocodes_bridge import BridgeConfig, DeepgramBridge, deepgram_handler

    deepgram_handler._DEEPGRAM_AGENT_URL = args.agent_url  # its URL is fixed otherwise
    agent: Any = {"agent": {"listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
                            "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}},
                            "speak": {"provider": {"type": "deepgram",
                                                   "model": "aura-2-thalia-en"}}}}
    config = BridgeConfig(deepgram_api_key="bench", deepgram_config=agent,
                          ac_token=args.token or None, host=args.host, port=args.port,
                          preferred_media_formats=("raw/lpcm16",))
    asyncio.run(DeepgramBridge(config).run())


if __name__ == "__main__":
    main()
