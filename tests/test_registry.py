import pytest
import torch.nn as nn

from codetr.registry import MODELS, TRANSFORMS


def test_misspelled_type_names_closest_entries():
    @MODELS.register_module(name='TinyProbeHead')
    class TinyProbeHead(nn.Module):
        pass

    try:
        with pytest.raises(KeyError, match="Did you mean: TinyProbeHead"):
            MODELS.build(dict(type='TinyProbeHaed'))
        assert isinstance(MODELS.build(dict(type='TinyProbeHead')), TinyProbeHead)
    finally:
        MODELS._module_dict.pop('TinyProbeHead')


def test_root_registry_build_goes_through_codetr_scope():
    from mmengine.registry import MODELS as ROOT_MODELS
    with pytest.raises(KeyError, match='codetr::model registry'):
        ROOT_MODELS.build(dict(type='NoSuchModelAnywhere'))


def test_parent_modules_are_found():
    # mmcv registers its transforms in mmengine's root; codetr's child must see them.
    assert TRANSFORMS.get('RandomChoiceResize').__name__ == 'RandomChoiceResize'
