"""Talking to ComfyUI: the wire protocol as typed data (:mod:`.protocol`) and the low-level
HTTP + WebSocket client (:mod:`.client`). The adapter (``comfyline.adapters.comfyui``) builds
the generation engine on these."""

from comfyline.comfy.client import ComfyClient, WsConnect, WsConnection, default_ws_connect
from comfyline.comfy.protocol import (
    HistoryEntry,
    ImageRef,
    MessageType,
    PromptAccepted,
    PromptState,
    QueueState,
    WsMessage,
)

__all__ = [
    "ComfyClient",
    "HistoryEntry",
    "ImageRef",
    "MessageType",
    "PromptAccepted",
    "PromptState",
    "QueueState",
    "WsConnect",
    "WsConnection",
    "WsMessage",
    "default_ws_connect",
]
