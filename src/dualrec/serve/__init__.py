"""Serving: an in-process recommender service, a FastAPI app over it, and bulk export.

``dualrec.serve.service`` and ``dualrec.serve.export`` need only numpy/pandas/faiss;
``dualrec.serve.app`` needs FastAPI (imported only there).
"""
