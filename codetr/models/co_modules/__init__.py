from .positives import MAX_POS_COORDS, MIN_POS_COORDS, AuxPositives, select_positives

__all__ = ['AuxPositives', 'select_positives', 'MIN_POS_COORDS', 'MAX_POS_COORDS']
