"""The zoo's logit-based methods (one module each): losses on the teacher's and student's logits."""

from kdbench_zoo.logit.akl import AKL
from kdbench_zoo.logit.ctkd import CTKD
from kdbench_zoo.logit.dist import DIST
from kdbench_zoo.logit.dkd import DKD
from kdbench_zoo.logit.js_kd import JSKD
from kdbench_zoo.logit.logit_std import LogitStd
from kdbench_zoo.logit.skew_kl import SkewKL
from kdbench_zoo.logit.takd import TAKD
from kdbench_zoo.logit.tv_kd import TVKD

METHODS: list = [DKD, DIST, LogitStd, CTKD, TAKD, JSKD, TVKD, SkewKL, AKL]
