# Runtime defaults shared by every codetr config: runner, hooks, environment, logging.
default_scope = 'codetr'
# CodetrRunner: checked checkpoint loading, atomic saves, CPU-only distributed runs.
runner_type = 'CodetrRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    # LoggerHook whose test-metrics JSON is written by one rank (mmengine's by all).
    logger=dict(type='DistSafeLoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Writes atomically and deletes the oldest file only after the new one is complete.
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Stop at the first NaN/inf loss; raise max_nonfinite_skips to skip that many steps.
    nonfinite_loss=dict(type='NonFiniteLossHook', max_nonfinite_skips=0),
    # Off unless enabled (tools/test.py --show-dir turns it on).
    visualization=dict(type='DetVisualizationHook'),
    # A progress bar (a line every 10 s in log files) over validation / test images; rank 0.
    progress=dict(type='EvalProgressHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py and tools/test.py switch to gloo when CUDA is unavailable.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False

# Test-time augmentation (tools/test.py --tta, with each dataset config's tta_pipeline): the
# views' boxes are un-flipped, concatenated and merged by the predicting branch's NMS /
# soft-NMS and max_per_img (model.test_cfg.query_head), else NMS 0.5 and 100 boxes;
# tta_cfg=dict(nms=..., max_per_img=...) sets them here.
tta_model = dict(type='DetTTAModel')
