"""The server side of one DLMS/COSEM application association (transport-independent: APDU in, APDU out).

* AARQ -> AARE. Lowest security is accepted from the public client only (``public_client``, SAP 16);
  low-level security (LLS) from any client whose password matches. Refusals carry the ACSE diagnostic:
  authentication-failure (wrong password), authentication-required (no password where one is needed),
  authentication-mechanism-name-not-recognised (HLS, or LLS on a meter without a password),
  application-context-name-not-supported (ciphered or SN referencing); an unusable InitiateRequest is
  refused with the xDLMS initiate error (dlms-version-too-low, incompatible-conformance, pdu-size-too-short).
* GET normal / with list / next (block transfer when the response exceeds the negotiated PDU size);
  SET is refused per attribute with read-write-denied (the meter is read-only); RLRQ -> RLRE.
* Anything else gets an ExceptionResponse: before association (service-not-allowed,
  operation-not-possible), an unknown or not negotiated service (service-unknown/service-not-allowed,
  service-not-supported), an APDU that does not decode (service-unknown, other-reason), one longer than the
  meter accepts (service-not-allowed, pdu-too-long).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from devices.meter import apdu as A
from devices.meter import axdr
from devices.meter.apdu import AcseDiagnostic, AssociationResult, Conformance, DataAccessResult, InitiateError
from devices.meter.apdu import ServiceError, StateError
from devices.meter.axdr import DecodeError
from devices.meter.model import MeterConfig
from devices.meter.objects import MeterObjects

log = logging.getLogger(__name__)

SUPPORTED = (Conformance.GET | Conformance.SET | Conformance.SELECTIVE_ACCESS | Conformance.BLOCK_TRANSFER_WITH_GET
             | Conformance.MULTIPLE_REFERENCES)
MIN_CLIENT_PDU = 32  # a data block header and some data must fit
BLOCK_OVERHEAD = 13  # C4 02 invoke last block(4) choice length(<=4)
DLMS_VERSION = 6


class Association:
    """One association of one client (one TCP connection, or one HDLC link)."""

    def __init__(self, objects: MeterObjects, config: MeterConfig, client_sap: int) -> None:
        self.objects, self.cfg, self.client_sap = objects, config, client_sap
        self.associated = False
        self.conformance = 0
        self.max_send = config.max_pdu_size
        self._blocks: list[bytes] = []  # the rest of a long GET response
        self._block_no = 0
        self._block_invoke = 0

    def handle(self, request: bytes) -> bytes:
        """The response to one APDU (always one: every error has its reply)."""
        if not request:
            return A.encode_exception(StateError.SERVICE_UNKNOWN, ServiceError.OTHER_REASON)
        tag = request[0]
        if len(request) > self.cfg.max_pdu_size and tag != A.AARQ:
            return A.encode_exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
        if tag == A.AARQ:
            return self._aarq(request)
        if tag == A.RLRQ:
            self.associated = False
            self._blocks = []
            return A.encode_rlre()
        if not self.associated:
            return A.encode_exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
        try:
            if tag == A.GET_REQUEST and self.conformance & Conformance.GET:
                return self._get(A.decode_get_request(request))
            if tag == A.SET_REQUEST and self.conformance & Conformance.SET:
                req = A.decode_set_request(request)
                return A.encode_set_response_normal(req.invoke, DataAccessResult.READ_WRITE_DENIED)
        except DecodeError as exc:
            log.info("client %d: malformed APDU refused: %s", self.client_sap, exc)
            return A.encode_exception(StateError.SERVICE_UNKNOWN, ServiceError.OTHER_REASON)
        if tag in (A.GET_REQUEST, A.SET_REQUEST, A.ACTION_REQUEST):
            return A.encode_exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        return A.encode_exception(StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)

    # -- association control -------------------------------------------------------------------------------
    def _aarq(self, request: bytes) -> bytes:
        reject = AssociationResult.REJECTED_PERMANENT
        try:
            aarq = A.decode_aarq(request)
        except DecodeError as exc:
            log.info("client %d: malformed AARQ refused: %s", self.client_sap, exc)
            return A.encode_aare(reject, AcseDiagnostic.NO_REASON_GIVEN, None)
        if self.associated:
            return A.encode_aare(reject, AcseDiagnostic.NO_REASON_GIVEN, None)
        if aarq.context != A.CONTEXT_LN:
            return A.encode_aare(reject, AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED, None)
        mechanism = 0 if aarq.mechanism is None else A.mechanism_id(aarq.mechanism)
        lls = mechanism == 1
        if mechanism == 0:
            if self.client_sap != self.cfg.public_client:
                return A.encode_aare(reject, AcseDiagnostic.AUTHENTICATION_REQUIRED, None)
        elif lls and self.cfg.password is not None:
            if aarq.password is None:
                return A.encode_aare(reject, AcseDiagnostic.AUTHENTICATION_REQUIRED, None)
            if not hmac.compare_digest(aarq.password, self.cfg.password.encode()):
                log.info("client %d: wrong LLS password", self.client_sap)
                return A.encode_aare(reject, AcseDiagnostic.AUTHENTICATION_FAILURE, None)
        else:
            return A.encode_aare(reject, AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED, None)
        if aarq.user_information is None:
            return A.encode_aare(reject, AcseDiagnostic.NO_REASON_GIVEN, None)
        error = None
        try:
            init = A.decode_initiate_request(aarq.user_information)
        except DecodeError:
            error = InitiateError.OTHER
        else:
            if init.dlms_version < DLMS_VERSION:
                error = InitiateError.DLMS_VERSION_TOO_LOW
            elif not init.conformance & SUPPORTED & (Conformance.GET | Conformance.SET):
                error = InitiateError.INCOMPATIBLE_CONFORMANCE
            elif init.max_pdu_size and init.max_pdu_size < MIN_CLIENT_PDU:
                error = InitiateError.PDU_SIZE_TOO_SHORT
        if error is not None:
            return A.encode_aare(reject, AcseDiagnostic.NO_REASON_GIVEN, A.encode_initiate_error(error))
        self.associated = True
        self.conformance = init.conformance & SUPPORTED
        # 0 means "no limit" in the InitiateRequest: the meter's own limit applies
        self.max_send = min(init.max_pdu_size or 0xFFFF, self.cfg.max_pdu_size)
        self._blocks = []
        return A.encode_aare(AssociationResult.ACCEPTED, AcseDiagnostic.NULL,
                             A.encode_initiate_response(self.conformance, self.cfg.max_pdu_size), lls=lls)

    # -- GET -----------------------------------------------------------------------------------------------
    def _get(self, req: A.GetNormal | A.GetNext | A.GetWithList) -> bytes:
        if isinstance(req, A.GetNext):
            return self._next_block(req)
        self._blocks = []
        if isinstance(req, A.GetNormal):
            result = self.objects.get(req.ref, req.selection)
            response = A.encode_get_response_normal(req.invoke, result)
            body: Callable[[], bytes | None] = lambda: axdr.encode(result) if isinstance(result, axdr.Data) else None  # noqa: E731
        else:
            if not self.conformance & Conformance.MULTIPLE_REFERENCES:
                return A.encode_exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
            results = [self.objects.get(ref, sel) for ref, sel in req.items]
            response = A.encode_get_response_with_list(req.invoke, results)
            body = lambda: A.encode_get_response_list_body(results)  # noqa: E731
        if len(response) <= self.max_send:
            return response
        raw = body()
        if raw is None or not self.conformance & Conformance.BLOCK_TRANSFER_WITH_GET:
            return A.encode_get_response_normal(req.invoke, int(DataAccessResult.OTHER_REASON))
        size = self.max_send - BLOCK_OVERHEAD
        self._blocks = [raw[k:k + size] for k in range(0, len(raw), size)]
        self._block_no, self._block_invoke = 0, req.invoke
        return self._send_block()

    def _send_block(self) -> bytes:
        chunk = self._blocks.pop(0)
        self._block_no += 1
        return A.encode_get_response_block(self._block_invoke, not self._blocks, self._block_no, chunk)

    def _next_block(self, req: A.GetNext) -> bytes:
        if not self._blocks:
            return A.encode_get_response_block(req.invoke, True, req.block,
                                               int(DataAccessResult.NO_LONG_GET_IN_PROGRESS))
        if req.block != self._block_no:
            self._blocks = []
            return A.encode_get_response_block(req.invoke, True, req.block,
                                               int(DataAccessResult.DATA_BLOCK_NUMBER_INVALID))
        self._block_invoke = req.invoke
        return self._send_block()
