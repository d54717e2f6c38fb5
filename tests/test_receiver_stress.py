"""Many small requests from busy pynetdicom senders: every one is answered, none waits for its DIMSE timeout.

pynetdicom's own reactor could take the reply a `send_c_*()` waited for and drop it, the
likelier the faster the reply: against Vireo about one C-ECHO in a thousand, and now and then a
quickly refused or small C-STORE, stalled until the sender's DIMSE timeout. The fix
(ingest.dicom_transport) is process-wide, so the senders here have it as every pynetdicom user
in Vireo's process has. Without it this test failed 4 runs in 5.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

import ingest.dicom_transport  # noqa: F401  (pynetdicom's reactor fix, for the senders in this process)
from tests.factories import write_series
from tests.support.vireo import VireoProcess

ASSOCIATIONS = 6
REQUESTS_PER_ASSOCIATION = 500  # C-ECHOs (the fastest replies), every fifth a C-STORE of a new 8x8 CT
DIMSE_TIMEOUT = 10  # a reply never takes a second here: 10 s of silence is a stall


def test_thousands_of_echoes_and_small_stores_are_all_answered(vireo: VireoProcess, tmp_path: Path) -> None:
    template = pydicom.dcmread(write_series(tmp_path, modality="CT", slices=1, rows=8, columns=8, seed=3).paths[0])
    sop_class = str(template.SOPClassUID)
    failures: list[str] = []

    def sender(number: int) -> None:
        ae = AE(ae_title=f"STRESS{number}")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="STRESS")
        if not assoc.is_established:
            failures.append(f"association {number}: not established")
            return

        def answered(request: str, send: Callable[[], Dataset]) -> bool:
            started = time.monotonic()
            status = send()
            if "Status" in status and status.Status == 0:
                return True
            failures.append(f"association {number}, {request}: {status.get('Status', 'no answer')} after {time.monotonic() - started:.1f} s")
            return False

        try:
            for i in range(REQUESTS_PER_ASSOCIATION):
                if i % 5:
                    if not answered(f"C-ECHO {i}", assoc.send_c_echo):
                        return
                    continue
                # a copy of its own: Dataset.copy() shares the elements, and six threads would change each
                # other's SOPInstanceUID between the command and the data set (Vireo rightly refused one with 0xA900)
                ds = copy.deepcopy(template)
                ds.SOPInstanceUID = generate_uid()
                ds.InstanceNumber = i + 1
                if not answered(f"C-STORE {i}", partial(assoc.send_c_store, ds)):
                    return
        finally:
            if assoc.is_established:
                assoc.release()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(ASSOCIATIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures
    assert not any(thread.is_alive() for thread in threads)
