from .draw import blend, draw_matches, draw_points, save_image, warp_image
from .report import Report

__all__ = ['Report', 'blend', 'draw_matches', 'draw_points', 'save_image', 'warp_image']
