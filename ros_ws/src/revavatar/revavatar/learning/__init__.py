"""Learning: networks, data, training, export and the offline LPIPS (torch, no torchvision).

Submodules are imported explicitly (``from revavatar.learning.lpips import LPIPS``): importing
this package alone loads nothing, so run-time code that only needs onnxruntime never pays for
torch. Weights load from the local cache; the set-up fetches them once (``revavatar
fetch-lpips``), nothing downloads at run time.
"""
