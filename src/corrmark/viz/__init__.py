from .draw import (blend, colour, draw_matches, draw_points, draw_points_vs_truth, save_image, stroke_width,
                   warp_image, with_legend)
from .report import Report, line_plot_svg

__all__ = ['Report', 'blend', 'colour', 'draw_matches', 'draw_points', 'draw_points_vs_truth', 'line_plot_svg',
           'save_image', 'stroke_width', 'warp_image', 'with_legend']
