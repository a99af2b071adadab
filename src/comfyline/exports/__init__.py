"""Sale-ready exports: marketplace rules as data, JPEGs with IPTC/XMP, titles and keywords per
market, the upscale target, and upload packages (a folder and a CSV per marketplace).

Modules: ``markets`` (the rules), ``texts`` (titles, keywords, forbidden words), ``upscale``
(the target size, Lanczos), ``jpeg`` (sRGB JPEG with IPTC/XMP), ``items`` (what goes in),
``checks`` (step 1: every rule checked), ``csvfile`` (each market's CSV), ``package`` (writing
it all, resumably).

>>> result = build_package(items, "adobe,freepik", Path("out/export"))  # doctest: +SKIP
>>> result.packages["adobe"].csv_files
(PosixPath('out/export/adobe/adobe.csv'),)
"""

from comfyline.exports.checks import check_package
from comfyline.exports.items import ExportItem, ExportOptions, apply_motif_cap
from comfyline.exports.jpeg import (
    TRAINED_ALGORITHMIC_MEDIA,
    ImageMetadata,
    JpegFile,
    embed_metadata,
    encode_jpeg,
    export_jpeg,
    to_srgb,
)
from comfyline.exports.markets import (
    MARKETS,
    RULES_CHECKED,
    AiLabel,
    Market,
    get_market,
    resolve_markets,
)
from comfyline.exports.package import MarketPackage, PackageResult, build_package, zip_package
from comfyline.exports.texts import ForbiddenWords, clean_keywords, fit_title, market_keywords
from comfyline.exports.upscale import (
    market_minimum,
    target_for_markets,
    target_size,
    upscale_lanczos,
)

__all__ = [
    "MARKETS",
    "RULES_CHECKED",
    "TRAINED_ALGORITHMIC_MEDIA",
    "AiLabel",
    "ExportItem",
    "ExportOptions",
    "ForbiddenWords",
    "ImageMetadata",
    "JpegFile",
    "Market",
    "MarketPackage",
    "PackageResult",
    "apply_motif_cap",
    "build_package",
    "check_package",
    "clean_keywords",
    "embed_metadata",
    "encode_jpeg",
    "export_jpeg",
    "fit_title",
    "get_market",
    "market_keywords",
    "market_minimum",
    "resolve_markets",
    "target_for_markets",
    "target_size",
    "to_srgb",
    "upscale_lanczos",
    "zip_package",
]
