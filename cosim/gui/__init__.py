"""The web pages of a run: the Residential GUI (one household) and the Technical GUI (topics, devices, brokers),
served with the SensorThings API by one FastAPI app (``app.create_gui_app``); see docs/gui.md."""
