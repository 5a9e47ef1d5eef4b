"""Plotly figure builders (plain data in, figure out; no files, no Streamlit) and the HTML run card."""
