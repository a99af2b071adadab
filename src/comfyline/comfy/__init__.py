"""Talking to ComfyUI, in layers: the wire protocol as typed data (:mod:`.protocol`), the
low-level HTTP + WebSocket client (:mod:`.client`, its HTTP on aiohttp through
:mod:`.transport`), and :class:`ComfyUIAdapter` (:mod:`.adapter`), which turns requests into
checked image bytes on one server."""

from comfyline.comfy.adapter import MAX_IN_FLIGHT, ComfyUIAdapter
from comfyline.comfy.client import ComfyClient, WsConnect, WsConnection, default_ws_connect
from comfyline.comfy.endpoint import Endpoint
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
    "MAX_IN_FLIGHT",
    "ComfyClient",
    "ComfyUIAdapter",
    "Endpoint",
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
