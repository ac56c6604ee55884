"""Collaborative modules: the adapters, aux positives and positive queries."""
from .adapter import MultiScaleAdapter
from .pos_query_generator import PositiveQueryGenerator, positive_box_embedding
from .positives import MAX_POS_COORDS, MIN_POS_COORDS, AuxPositives, select_positives
from .single_scale_adapter import SingleScaleAdapter

__all__ = ['AuxPositives', 'MultiScaleAdapter', 'PositiveQueryGenerator', 'SingleScaleAdapter',
           'select_positives', 'positive_box_embedding', 'MIN_POS_COORDS', 'MAX_POS_COORDS']
