"""The zoo's relation-based methods (one module each): relations between the samples of a batch, or
between a sample's representations in teacher and student.

``rkd`` (Park et al. 2019), ``pkt`` (Passalis & Tefas 2018), ``sp`` (Tung & Mori 2019) and ``crd``
(Tian et al. 2020); :mod:`kdbench_zoo.relation.features` holds what they share (which vectors are the
samples, and their one phase).
"""

from kdbench_zoo.relation.crd import CRD
from kdbench_zoo.relation.pkt import PKT
from kdbench_zoo.relation.rkd import RKD
from kdbench_zoo.relation.sp import SP

METHODS: list = [RKD, PKT, SP, CRD]
