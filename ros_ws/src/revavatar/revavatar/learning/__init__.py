"""Learning utilities shared by the alignment and restoration models (losses, metrics, weights).

Everything here is torch-only (no torchvision) and loads weights from the local cache; the set-up
fetches them once (``revavatar fetch-lpips``), nothing downloads at run time.
"""

from revavatar.learning.lpips import LPIPS, image_to_tensor, lpips_distance
from revavatar.learning.lpips_weights import fetch_lpips_weights, load_lpips, main_fetch

__all__ = ["LPIPS", "fetch_lpips_weights", "image_to_tensor", "load_lpips", "lpips_distance", "main_fetch"]
