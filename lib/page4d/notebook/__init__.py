"""Running notebooks as records: their parameters (`params`) and one execution into a run folder
(`runner`), shared by JupyterLab-free runs, the sweep and `page4d.main`."""
