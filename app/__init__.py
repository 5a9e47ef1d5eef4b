"""Streamlit-side glue for the medcls dashboard: the cached job manager, the shared
sidebar, the config form and run views. All training, data and metric logic lives
in the ``medcls`` library; this package only collects input and renders."""
