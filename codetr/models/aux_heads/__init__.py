from .co_atss_head import CoATSSHead  # noqa: F401
from .co_fcos_head import CoFCOSHead  # noqa: F401
from .co_mask_rcnn_head import CoMaskRCNNHead  # noqa: F401
from .co_paa_head import CoPAAHead  # noqa: F401
from .co_retina_head import CoRetinaHead  # noqa: F401
from .co_rpn_roi_head import CoRPNRoIHead  # noqa: F401
