"""Names -> things: policies (`policies.py`), suites (`suites.py`), simulators (`sims.py`), ablations
(`ablations.py`), over one mechanism (`base.py`) and the content folders (`content.py`)."""
