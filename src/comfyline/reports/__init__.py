"""What an order leaves beside its images, rendered from the ledger's data.

* :mod:`comfyline.reports.report`: ``generation_report.json`` (model, builder, atomic writer);
* :mod:`comfyline.reports.contact_sheet`: the series as a grid of thumbnails;
* :mod:`comfyline.reports.charts`: temperature and images per minute over the run;
* :mod:`comfyline.reports.png_metadata`: the parameters inside each PNG.

The submodules are not imported here, so that importing one does not load matplotlib.
"""
