// p2prun peers talk plain TCP; simple-peer only needs these names to exist at import time.
export const RTCPeerConnection = undefined
export const RTCSessionDescription = undefined
export const RTCIceCandidate = undefined
export const RTCDataChannel = undefined
export default {}
