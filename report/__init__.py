"""The report's builder: `python -m report.build` (see report/build.py) turns the run folders under
results/ into report/report.pdf. Modules by job: runs (find and read run folders), numbers (the values
the text reads), figures (copy and draw), latex (text, tables, generated files), build (the driver)."""
